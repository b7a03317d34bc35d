"""The fake engine's decode-throughput log lines, in the format of the engine it pretends to be.

With ``FakeConfig.decode_log_interval_s > 0`` the fake prints, every interval while requests run, the line the
real engine's stat logger prints (formats read from their sources, see
``pytest_dsbench/engines/<name>/logformat.py``), so the ali decode method can be exercised end to end: in start mode
the lines land in the engine log file.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any


def decode_line(engine: str, running: int, gen_tok_s: float, prompt_tok_s: float = 0.0, tokens: int = 0) -> str:
    """One decode-throughput line as ``engine`` (vllm, sglang, lmdeploy) logs it."""
    if engine == "sglang":
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        return (
            f"[{stamp} TP0] Decode batch, #running-req: {running}, #token: {tokens}, token usage: 0.00, "
            f"cuda graph: False, gen throughput (token/s): {gen_tok_s:.2f}, #queue-req: 0, "
        )
    if engine == "lmdeploy":
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        return (
            f"[{stamp} DP0] Avg prompt throughput: {prompt_tok_s:.1f} tokens/s, Avg generation throughput: "
            f"{gen_tok_s:.1f} tokens/s, Finished: 0 reqs, Unfinished: {running} reqs, "
            f"Running: {running} reqs, Waiting: 0 reqs, GPU KV cache usage: 0.0%, Prefix cache hit rate: 0.0%"
        )
    stamp = time.strftime("%m-%d %H:%M:%S")
    return (
        f"(APIServer pid={os.getpid()}) INFO {stamp} [loggers.py:284] Engine 000: Avg prompt throughput: "
        f"{prompt_tok_s:.1f} tokens/s, Avg generation throughput: {gen_tok_s:.1f} tokens/s, Running: "
        f"{running} reqs, Waiting: 0 reqs, CPU KV cache usage: 0.0%, Prefix cache hit rate: 0.0%"
    )


def start_decode_log(engine: Any) -> Callable[[Any], Awaitable[None]]:
    """An aiohttp ``on_startup`` hook that prints decode lines every ``decode_log_interval_s`` while busy."""

    async def loop() -> None:
        interval = engine.config.decode_log_interval_s
        last_tokens, last_prompt, last = engine.tokens_streamed, engine.prompt_tokens_total, time.monotonic()
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            tokens, prompt = engine.tokens_streamed, engine.prompt_tokens_total
            if engine.running > 0 and tokens > last_tokens:
                gap = now - last
                print(
                    decode_line(
                        engine.config.engine,
                        engine.running,
                        (tokens - last_tokens) / gap,
                        (prompt - last_prompt) / gap,
                        tokens,
                    ),
                    flush=True,
                )
            last_tokens, last_prompt, last = tokens, prompt, now

    async def on_startup(app: Any) -> None:
        app["dsbench_decode_log"] = asyncio.get_running_loop().create_task(loop())

    return on_startup
