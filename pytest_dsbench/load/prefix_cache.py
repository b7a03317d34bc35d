"""Prefix-cache control: measured prompts are never served from the cache unless the workload asks for it.

Why: engines keep the KV blocks of earlier prompts; a seeded workload sends the same prompts every run, so a
second run prefills nothing and its TTFT and throughput are inflated (vLLM issue 52884 measured up to 86 %).
A workload's ``prefix_cache`` says what it means to measure: ``"cold"`` (the default) or ``"warm"``.

For a cold run the suite empties the engine's prefix cache after the warm-up, where the engine has an endpoint
for it (its behaviour's ``prefix_cache_reset_path``: vLLM ``POST /reset_prefix_cache``, which 0.32 serves in
dev mode only, so the suite's launches set ``VLLM_SERVER_DEV_MODE=1``; SGLang ``POST /flush_cache``). Where it
has none (LMDeploy, or an attached server without the endpoint) the run's prompts are salted instead: their
first tokens are drawn from a per-run random salt (:func:`pytest_dsbench.load.datasets.salted`), which no
earlier run can have cached. Warm-up prompts are always salted apart from the measured ones.

Then the engine's own counters judge the run (:func:`cold_cache_problem`): a cold run whose prompts hit the
cache for more than :data:`COLD_HIT_TOLERANCE` of the queried prompt tokens is INVALID.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

from pytest_dsbench._http import auth_headers, join

if TYPE_CHECKING:
    from pytest_dsbench.load.server_metrics import ServerMetricsReport

COLD_HIT_TOLERANCE = 0.01
"""Largest fraction of a cold run's queried prompt tokens that may come from the prefix cache (block-aligned
shared beginnings of distinct prompts, a chat template's common prefix)."""

RESET_ATTEMPTS = 5
RESET_RETRY_S = 0.3
RESET_TIMEOUT_S = 10.0


def new_salt() -> int:
    """A salt no earlier run used (from the OS's randomness, not the workload's seed)."""
    return random.SystemRandom().randrange(1, 2**62)


def reset(base_url: str, path: str | None, api_key: str | None = None) -> tuple[bool, str]:
    """Empty the engine's prefix cache with ``POST path``; (done, what happened).

    vLLM answers ``{"success": false}`` while blocks are still held (requests finishing), so a refusal is
    retried a few times; an endpoint the server lacks (404/405) is not.
    """
    import httpx

    if path is None:
        return False, "the engine has no prefix-cache reset endpoint"
    url = join(base_url, path)
    detail = ""
    for attempt in range(RESET_ATTEMPTS):
        try:
            reply = httpx.post(url, headers=auth_headers(api_key), timeout=RESET_TIMEOUT_S)
        except httpx.HTTPError as exc:
            return False, f"POST {path}: {type(exc).__name__}: {str(exc)[:200]}"
        if reply.status_code in (404, 405):
            return False, f"POST {path}: HTTP {reply.status_code} (the server does not serve it)"
        success = True
        if reply.status_code == 200 and reply.headers.get("content-type", "").startswith("application/json"):
            body = reply.json()
            success = not (isinstance(body, dict) and body.get("success") is False)
        if reply.status_code == 200 and success:
            return True, f"POST {path}"
        detail = f"POST {path}: HTTP {reply.status_code} {reply.text[:120]!r}"
        if attempt + 1 < RESET_ATTEMPTS:
            time.sleep(RESET_RETRY_S)
    return False, detail


def cold_cache_problem(report: ServerMetricsReport, tolerance: float = COLD_HIT_TOLERANCE) -> str | None:
    """Why a cold run is INVALID (its prompts hit the prefix cache), or None when the counters show no reuse or
    the engine exposes none."""
    fraction = report.summary().get("prefix_cache_hit_fraction")
    if fraction is None or fraction <= tolerance:
        return None
    hits = report.increase("prefix_cache_hits")
    queried = report.increase("prefix_cache_queries")
    counted = f" ({hits:.0f} of {queried:.0f} queried prompt tokens)" if hits is not None and queried else ""
    return (
        "INVALID run, prefix cache: the cold workload's prompts hit the engine's prefix cache for "
        f"{fraction:.1%} of their tokens{counted}, more than the {tolerance:.0%} a cold run allows (cache control: "
        f"{report.cache_control or 'none'}). Its TTFT and throughput would be inflated: let the suite reset the "
        "cache (vLLM: VLLM_SERVER_DEV_MODE=1 serves /reset_prefix_cache), or set prefix_cache = \"warm\" in the "
        "workload if reuse is what it measures"
    )
