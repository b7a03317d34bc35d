"""The fake engine's server metrics: a vLLM-named /metrics page, a prefix cache and speculative-decoding counters.

For the self-tests of :mod:`pytest_dsbench.load.server_metrics` and :mod:`pytest_dsbench.load.prefix_cache`: each
knob of :class:`~pytest_dsbench.testing.fake_engine.FakeConfig` makes the fake violate one rule or limit.

* ``prefix_cache``: prompts are cached in blocks of :data:`BLOCK_CHARS` characters (one token each), hashed in a
  chain as vLLM does, so a prompt seen before is a hit for all its full blocks; ``POST /reset_prefix_cache``
  empties it unless ``prefix_cache_reset`` is off (then the route does not exist, as on vLLM without dev mode);
  ``prefix_cache_reset_ignored`` answers success and keeps the cache (a reset that does not work).
* ``preemptions_per_request``, ``kv_cache_usage_per_running``, ``waiting_per_running``: what the engine reports.
* ``spec_tokens`` / ``spec_accepted``: draft tokens proposed and accepted per decoding step (MTP).
* ``metrics_enabled = False``: no /metrics at all (404).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BLOCK_CHARS = 16


@dataclass
class FakeServerMetrics:
    """Counters the fake keeps beside its request counters (``engine``: the fake engine, its config and running
    count; typed loosely so that this module does not import the engine module that imports it)."""

    ignore_reset: bool = False
    blocks: set[str] = field(default_factory=set)
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    preemptions: int = 0
    spec_drafts: int = 0
    spec_draft_tokens: int = 0
    spec_accepted_tokens: int = 0

    def admit(self, engine: Any, prompt: str, prompt_tokens: int) -> None:
        """A request's prompt meets the prefix cache: count queried and hit tokens, cache its blocks."""
        cfg = engine.config
        self.preemptions += cfg.preemptions_per_request
        if not cfg.prefix_cache:
            return
        self.prefix_cache_queries += prompt_tokens
        chain = ""
        hit = True
        for start in range(0, len(prompt) - BLOCK_CHARS + 1, BLOCK_CHARS):
            chain = hashlib.sha256((chain + prompt[start:start + BLOCK_CHARS]).encode()).hexdigest()
            if hit and chain in self.blocks:
                self.prefix_cache_hits += BLOCK_CHARS
            else:
                hit = False
                self.blocks.add(chain)

    def generated(self, engine: Any, tokens: int) -> None:
        """A request generated ``tokens``: the speculative-decoding steps that produced them."""
        k = engine.config.spec_tokens
        if k <= 0 or tokens <= 0:
            return
        accepted = min(k, engine.config.spec_accepted)
        steps = math.ceil(tokens / (1 + accepted))
        self.spec_drafts += steps
        self.spec_draft_tokens += steps * k
        self.spec_accepted_tokens += steps * accepted

    def page(self, engine: Any) -> list[str]:
        """vLLM-named lines for the server metrics (after the fake's request counters)."""
        cfg = engine.config
        p = f"{cfg.engine}:"
        labels = '{engine="0",model_name="' + cfg.model.replace("\\", "\\\\").replace('"', '\\"') + '"}'
        gauges = {
            "num_requests_waiting": engine.running * cfg.waiting_per_running,
            "kv_cache_usage_perc": min(1.0, engine.running * cfg.kv_cache_usage_per_running),
        }
        counters = {"num_preemptions": self.preemptions}
        if cfg.prefix_cache:
            counters |= {"prefix_cache_queries": self.prefix_cache_queries, "prefix_cache_hits": self.prefix_cache_hits}
        if cfg.spec_tokens > 0:
            counters |= {
                "spec_decode_num_drafts": self.spec_drafts,
                "spec_decode_num_draft_tokens": self.spec_draft_tokens,
                "spec_decode_num_accepted_tokens": self.spec_accepted_tokens,
            }
        lines = []
        for name, value in gauges.items():
            lines += [f"# HELP {p}{name} fake {name}", f"# TYPE {p}{name} gauge", f"{p}{name}{labels} {value}"]
        for name, value in counters.items():
            lines += [f"# HELP {p}{name}_total fake {name}", f"# TYPE {p}{name}_total counter",
                      f"{p}{name}_total{labels} {float(value)}"]
        return lines

    async def reset(self, request: web.Request) -> web.Response:
        """``POST /reset_prefix_cache``: vLLM's answer."""
        if not self.ignore_reset:
            self.blocks.clear()
        return web.json_response({"success": True})
