"""vLLM's decode-throughput log lines (read by seed 003's ali decode method, :mod:`pytest_dsbench.methods.ali`).

The v1 stat logger (``vllm/v1/metrics/loggers.py``) writes, every ``VLLM_LOG_STATS_INTERVAL`` s (10 by default)
and only while the engine is busy::

    (APIServer pid=1) INFO 11-23 21:50:01 [loggers.py:284] Engine 000: Avg prompt throughput: 0.0 tokens/s,
    Avg generation throughput: 456.7 tokens/s, Running: 8 reqs, Waiting: 0 reqs, CPU KV cache usage: 1.2%, ...

and, with ``--enable-logging-iteration-details``, one line per engine step::

    Engine 000: Iteration(412): 0 context requests, 0 context tokens, 8 generation requests,
    8 generation tokens, iteration elapsed time: 11.62 ms, CPU KV cache usage: 1.2%

(decode-only steps count: ``generation tokens / elapsed time`` at ``generation requests`` running).
LMDeploy's stat logger writes the same stat line (:mod:`pytest_dsbench.engines.lmdeploy.logformat`).
"""

from __future__ import annotations

import re

from pytest_dsbench.engines.base import DecodeLine

_STAT = re.compile(r"Avg generation throughput:\s*([0-9.]+)\s*tokens/s,.*?Running:\s*(\d+)\s*reqs")
_ITERATION = re.compile(
    r"Iteration\(\d+\):\s*(\d+) context requests,\s*\d+ context tokens,\s*(\d+) generation requests,"
    r"\s*(\d+) generation tokens,\s*iteration elapsed time:\s*([0-9.]+) ms"
)


def parse_stat_line(line: str) -> DecodeLine | None:
    """The stat line vLLM and LMDeploy share, labelled by who wrote it: ``vllm`` (``Engine NNN:``),
    ``lmdeploy`` (``DP``), or ``vllm/lmdeploy`` when the line does not tell."""
    m = _STAT.search(line)
    if m is None:
        return None
    source = "vllm" if "Engine " in line else "lmdeploy" if "DP" in line else "vllm/lmdeploy"
    return int(m.group(2)), float(m.group(1)), source


def parse_iteration_line(line: str) -> DecodeLine | None:
    """A decode-only iteration-details line (a step that prefilled anything is not a decode sample)."""
    m = _ITERATION.search(line)
    if m is None:
        return None
    context, running, tokens, elapsed_ms = int(m.group(1)), int(m.group(2)), int(m.group(3)), float(m.group(4))
    if context == 0 and elapsed_ms > 0:
        return running, tokens / elapsed_ms * 1000.0, "vllm-iteration"
    return None


def parse_decode_line(line: str) -> DecodeLine | None:
    """A vLLM stat line or decode-only iteration line read (None for any other line)."""
    return parse_stat_line(line) or parse_iteration_line(line)
