"""Decode throughput per running batch size, parsed from the engines' own server logs (seed 003 ali decode).

The three engines log it differently (read from their sources):

* SGLang scheduler, every ``--decode-log-interval`` steps::

    [2026-03-14 04:59:11 TP0] Decode batch, #running-req: 20, #token: 2326, token usage: 0.14,
    cuda graph: True, gen throughput (token/s): 1174.06, #queue-req: 6

  (older releases write ``Decode batch. #running-req: ...``; 0.5.17 with ``SGLANG_LOG_FORWARD_ITERS`` writes
  ``Decode batch [412], #running-req: ...``, and names the graph backend in place of ``cuda graph``).
* vLLM v1 stat logger (``vllm/v1/metrics/loggers.py``), every ``VLLM_LOG_STATS_INTERVAL`` s (10 by default),
  only while the engine is busy::

    (APIServer pid=1) INFO 11-23 21:50:01 [loggers.py:284] Engine 000: Avg prompt throughput: 0.0 tokens/s,
    Avg generation throughput: 456.7 tokens/s, Running: 8 reqs, Waiting: 0 reqs, CPU KV cache usage: 1.2%, ...

  and, with ``--enable-logging-iteration-details``, one line per engine step::

    Engine 000: Iteration(412): 0 context requests, 0 context tokens, 8 generation requests,
    8 generation tokens, iteration elapsed time: 11.62 ms, CPU KV cache usage: 1.2%

  (decode-only steps count: ``generation tokens / elapsed time`` at ``generation requests`` running).
* LMDeploy ``LoggingStatLogger`` (``--enable-metrics``)::

    [2026-01-01 10:00:00 DP0] Avg prompt throughput: 0.0 tokens/s, Avg generation throughput: 123.4 tokens/s,
    Finished: 0 reqs, Unfinished: 8 reqs, Running: 8 reqs, Waiting: 0 reqs, GPU KV cache usage: 3.1%, ...

  (older releases: ``DP: 0, Avg prompt throughput: ...``). 0.18.0 (``lmdeploy/metrics/loggers.py``, every 10 s,
  metrics on unless ``--disable-metrics``) writes instead::

    [2026-12-07 12:00:00 DP0] Avg thr (in/out): 0.0 / 456.7 tokens/s, Server (succeeded/failed/routed/waiting):
    12 / 0 / 8 / 0, Engine (running/waiting): 8 / 0, KV cache: 3.1%,

Idle lines (no running request, or zero throughput) are not samples.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

LogFormat = Literal["auto", "vllm", "sglang", "lmdeploy"]

_SGLANG = re.compile(
    r"Decode batch(?: \[\d+\])?[.,]\s*#running-req:\s*(\d+).*?gen throughput \(token/s\):\s*([0-9.]+)"
)
_AVG = re.compile(r"Avg generation throughput:\s*([0-9.]+)\s*tokens/s,.*?Running:\s*(\d+)\s*reqs")
_LMDEPLOY_THR = re.compile(
    r"Avg thr \(in/out\):\s*[0-9.]+\s*/\s*([0-9.]+)\s*tokens/s,.*?Engine \(running/waiting\):\s*(\d+)\s*/"
)
_ITER = re.compile(
    r"Iteration\(\d+\):\s*(\d+) context requests,\s*\d+ context tokens,\s*(\d+) generation requests,"
    r"\s*(\d+) generation tokens,\s*iteration elapsed time:\s*([0-9.]+) ms"
)


@dataclass(frozen=True)
class DecodeSample:
    """One logged decode throughput at one running batch size."""

    running: int
    gen_tok_s: float
    source: str
    line: int


def parse_line(line: str, fmt: LogFormat = "auto") -> tuple[int, float, str] | None:
    """(running requests, generation tok/s, which format) of one log line, or None."""
    if fmt in ("auto", "sglang") and (m := _SGLANG.search(line)):
        return int(m.group(1)), float(m.group(2)), "sglang"
    if fmt in ("auto", "vllm", "lmdeploy") and (m := _AVG.search(line)):
        source = "vllm" if "Engine " in line else "lmdeploy" if "DP" in line else "vllm/lmdeploy"
        return int(m.group(2)), float(m.group(1)), source
    if fmt in ("auto", "lmdeploy") and (m := _LMDEPLOY_THR.search(line)):
        return int(m.group(2)), float(m.group(1)), "lmdeploy"
    if fmt in ("auto", "vllm") and (m := _ITER.search(line)):
        context, running, tokens, elapsed_ms = (
            int(m.group(1)),
            int(m.group(2)),
            int(m.group(3)),
            float(m.group(4)),
        )
        if context == 0 and elapsed_ms > 0:
            return running, tokens / elapsed_ms * 1000.0, "vllm-iteration"
    return None


def parse_lines(lines: Iterable[str], fmt: LogFormat = "auto", first_line: int = 0) -> list[DecodeSample]:
    """Every non-idle decode sample in ``lines``."""
    samples = []
    for n, line in enumerate(lines, start=first_line):
        parsed = parse_line(line, fmt)
        if parsed is not None and parsed[0] > 0 and parsed[1] > 0:
            samples.append(DecodeSample(parsed[0], parsed[1], parsed[2], n))
    return samples


class LogCursor:
    """Reads what a set of log files gained since the cursor was placed (one ali decode probe's lines)."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self.offsets = {p: (p.stat().st_size if p.is_file() else 0) for p in self.paths}

    def new_lines(self) -> list[str]:
        lines: list[str] = []
        for path in self.paths:
            if not path.is_file():
                continue
            with path.open("rb") as handle:
                handle.seek(self.offsets[path])
                data = handle.read()
            self.offsets[path] += len(data)
            lines += data.decode("utf-8", errors="replace").splitlines()
        return lines
