"""How the fake engine behaves under load and on client disconnects, with the faults that break it.

A compliant fake answers at once (its ``ttft_ms``/``itl_ms`` knobs aside), aborts a generation whose client went
away and runs requests concurrently. The load faults make generation take time so a check can observe them:

* ``disconnect_not_aborted``: 25 ms per token (at most 5 s) and the generation goes on after its client
  disconnected (streams keep "writing" into the closed connection; non-streamed requests keep computing).
* ``health_blocks_under_load``: every generation takes 2.5 s and ``/health`` waits until none is running.
* ``omitted_max_tokens_serializes``: requests without ``max_tokens`` run one at a time, 30 ms per token (a
  scheduler that reserves the worst-case budget for each).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

ZOMBIE_ITL_S = 0.025
ZOMBIE_MAX_S = 5.0
BLOCKING_GENERATION_S = 2.5
SERIAL_ITL_S = 0.03


class _Engine(Protocol):
    config: Any
    running: int
    serial_lock: asyncio.Lock


def serializes(engine: _Engine, explicit_max_tokens: int | None) -> bool:
    return explicit_max_tokens is None and bool(engine.config.has("omitted_max_tokens_serializes"))


def generation_delay_s(engine: _Engine, explicit_max_tokens: int | None, tokens: int) -> float:
    """Extra time a generation of ``tokens`` tokens takes under the load faults (0 for a compliant fake)."""
    has = engine.config.has
    if has("health_blocks_under_load"):
        return BLOCKING_GENERATION_S
    if has("disconnect_not_aborted"):
        return min(ZOMBIE_MAX_S, ZOMBIE_ITL_S * tokens)
    if serializes(engine, explicit_max_tokens):
        return SERIAL_ITL_S * tokens
    return 0.0


def admission(engine: _Engine, explicit_max_tokens: int | None) -> contextlib.AbstractAsyncContextManager[Any]:
    """The context a generation runs in: the engine-wide lock when the serializing fault applies."""
    if serializes(engine, explicit_max_tokens):
        return engine.serial_lock
    return contextlib.nullcontext()


def keeps_generating_after_disconnect(engine: _Engine) -> bool:
    return bool(engine.config.has("disconnect_not_aborted"))


async def wait_for_health(engine: _Engine) -> None:
    """``/health`` under ``health_blocks_under_load``: queued behind every running generation."""
    if engine.config.has("health_blocks_under_load"):
        while engine.running > 0:
            await asyncio.sleep(0.02)
