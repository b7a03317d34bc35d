"""LMDeploy's decode-throughput log line (read by seed 003's ali decode method, :mod:`pytest_dsbench.methods.ali`).

``LoggingStatLogger`` (``--enable-metrics``) writes vLLM's stat line with a DP prefix::

    [2026-01-01 10:00:00 DP0] Avg prompt throughput: 0.0 tokens/s, Avg generation throughput: 123.4 tokens/s,
    Finished: 0 reqs, Unfinished: 8 reqs, Running: 8 reqs, Waiting: 0 reqs, GPU KV cache usage: 3.1%, ...

(older releases: ``DP: 0, Avg prompt throughput: ...``), so that line's parser is vLLM's
(:func:`pytest_dsbench.engines.vllm.logformat.parse_stat_line`). 0.18.0 (``lmdeploy/metrics/loggers.py``, every
10 s, metrics on unless ``--disable-metrics``) writes instead::

    [2026-12-07 12:00:00 DP0] Avg thr (in/out): 0.0 / 456.7 tokens/s, Server (succeeded/failed/routed/waiting):
    12 / 0 / 8 / 0, Engine (running/waiting): 8 / 0, KV cache: 3.1%,
"""

from __future__ import annotations

import re

from pytest_dsbench.engines.base import DecodeLine
from pytest_dsbench.engines.vllm.logformat import parse_stat_line

_AVG_THR = re.compile(
    r"Avg thr \(in/out\):\s*[0-9.]+\s*/\s*([0-9.]+)\s*tokens/s,.*?Engine \(running/waiting\):\s*(\d+)\s*/"
)


def parse_decode_line(line: str) -> DecodeLine | None:
    """An LMDeploy stat line read, either release's form (None for any other line)."""
    if m := _AVG_THR.search(line):
        return int(m.group(2)), float(m.group(1)), "lmdeploy"
    return parse_stat_line(line)
