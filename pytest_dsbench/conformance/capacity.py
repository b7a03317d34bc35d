"""Helpers of the load and lifecycle checks (A06, G10, P03, P04): concurrent calls, streams abandoned or timed
on the client side, and whether the engine stopped working for clients that went away.

Every request here has a timeout; nothing waits longer than the check's own bound.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from pytest_dsbench.conformance.common import metric_counters, metric_value
from pytest_dsbench.conformance.context import REASONING_KEYS, ApiContext
from pytest_dsbench.sse import DONE, SSEParser

RUNNING_GAUGES = ("num_requests_running", "num_running_reqs")
"""Running-request gauges, after the profile's metrics prefix: vLLM's, then SGLang's."""


def parallel(calls: Sequence[Callable[[], Any]], workers: int) -> list[Any]:
    """Run ``calls`` on ``workers`` threads; results in order (an exception in a call is raised here)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.result() for f in futures]


def long_generation(ctx: ApiContext) -> dict[str, Any]:
    """Parameters of a request that keeps generating for a long time unless it is aborted."""
    params: dict[str, Any] = {"max_tokens": max(64, min(1024, ctx.target.max_model_len // 2))}
    if "ignore_eos" in ctx.behaviour.features:
        params["ignore_eos"] = True
    return params


def client_timeout(read_s: float) -> httpx.Timeout:
    """A short read timeout with room to connect (many connections at once on a busy machine)."""
    return httpx.Timeout(read_s, connect=5.0, write=5.0, pool=5.0)


# -- the engine's view of running work ------------------------------------------------------------------------
def running_gauge(ctx: ApiContext) -> tuple[str, float] | None:
    """(name, value) of the engine's running-request gauge, or None without metrics or such a gauge."""
    if "metrics" not in ctx.behaviour.features:
        return None
    reply = ctx.api.get("/metrics", timeout_s=5.0)
    if reply.status != 200:
        return None
    text = reply.body.decode("utf-8", "replace")
    for name in RUNNING_GAUGES:
        full = (ctx.behaviour.metrics_prefix or "") + name
        value = metric_value(text, full)
        if value is not None:
            return full, value
    return None


@dataclass
class Release:
    """Whether the engine stopped working for abandoned requests: ``released`` None means it cannot tell."""

    released: bool | None
    detail: str


def wait_for_release(ctx: ApiContext, baseline: float | None, grace_s: float, what: str) -> Release:
    """Wait up to ``grace_s`` for the running gauge to fall back to ``baseline``; without a gauge, for the
    generation-token counter to stand still for 0.5 s. ``what`` names the abandoned requests."""
    deadline = time.monotonic() + grace_s
    gauge = running_gauge(ctx) if baseline is not None else None
    if gauge is not None and baseline is not None:
        while True:
            name, value = gauge
            if value <= baseline:
                return Release(True, f"{name} = {value:g}")
            if time.monotonic() >= deadline:
                return Release(False, f"{name} = {value:g} (it was {baseline:g} before) {grace_s:g} s after {what}")
            time.sleep(0.1)
            gauge = running_gauge(ctx) or (name, value)
    if "metrics" not in ctx.behaviour.features:
        return Release(None, "no metrics")
    last = metric_counters(ctx)["generation_tokens_total"]
    if last is None:
        return Release(None, "no generation-token counter")
    start = last
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = metric_counters(ctx)["generation_tokens_total"]
        if now != last:
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= 0.5:
            return Release(True, "generation-token counter still")
    grown = (last or 0) - start
    prefix = ctx.behaviour.metrics_prefix or ""
    return Release(False, f"{prefix}generation_tokens_total still growing (+{grown:g}) {grace_s:g} s after {what}")


# -- streams read on the client side --------------------------------------------------------------------------
@dataclass
class Abandoned:
    """A stream the client closed after a few events."""

    status: int
    events: int
    finished: bool


def abandon_stream(ctx: ApiContext, body: dict[str, Any], events: int, timeout_s: float) -> Abandoned:
    """POST a chat stream, read ``events`` SSE events and close the connection (the client goes away)."""
    parser = SSEParser()
    seen = 0
    finished = False
    with ctx.api.http.stream(
        "POST", "/v1/chat/completions", json=body, timeout=client_timeout(timeout_s)
    ) as response:
        if response.status_code != 200:
            response.read()
            return Abandoned(response.status_code, 0, False)
        for piece in response.iter_raw():
            for event in parser.feed(piece):
                seen += 1
                finished = finished or event.data.strip() == DONE
            if seen >= events or finished:
                break
    return Abandoned(200, seen, finished)


@dataclass
class Timed:
    """When a stream produced its first text and when the client stopped reading it (seconds from the send)."""

    status: int
    first_token_s: float | None
    end_s: float
    finished: bool
    body: bytes = b""


def _has_text(data: str) -> bool:
    try:
        chunk = json.loads(data)
    except ValueError:
        return False
    for choice in chunk.get("choices") or [] if isinstance(chunk, dict) else []:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and any(delta.get(k) for k in ("content", *REASONING_KEYS)):
            return True
        if isinstance(choice, dict) and choice.get("text"):
            return True
    return False


class StartGate:
    """Counts streams that produced their first text; open when all have (or one gave up)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.lock = threading.Lock()
        self.open = threading.Event()

    def arrive(self) -> None:
        with self.lock:
            self.count += 1
            if self.count >= self.total:
                self.open.set()

    def give_up(self) -> None:
        self.open.set()


def timed_stream(ctx: ApiContext, body: dict[str, Any], gate: StartGate, timeout_s: float) -> Timed:
    """Read a chat stream and time its first text; then keep reading until every stream sharing ``gate`` has
    its first text too, and close. Ends at [DONE] or after ``timeout_s``."""
    parser = SSEParser()
    begin = time.monotonic()
    first: float | None = None
    finished = False
    try:
        with ctx.api.http.stream(
            "POST", "/v1/chat/completions", json=body, timeout=client_timeout(timeout_s)
        ) as response:
            if response.status_code != 200:
                gate.give_up()
                return Timed(response.status_code, None, time.monotonic() - begin, False, response.read())
            for piece in response.iter_raw():
                for event in parser.feed(piece):
                    if event.data.strip() == DONE:
                        finished = True
                    elif first is None and _has_text(event.data):
                        first = time.monotonic() - begin
                        gate.arrive()
                if finished or time.monotonic() - begin > timeout_s or (first is not None and gate.open.is_set()):
                    break
    except httpx.TimeoutException:
        pass
    if first is None:
        gate.give_up()  # nobody waits for a stream that never started
    return Timed(200, first, time.monotonic() - begin, finished)
