"""LMDeploy's decode-throughput log line (read by seed 003's ali decode method, :mod:`pytest_dsbench.methods.ali`).

``LoggingStatLogger`` (``--enable-metrics``) writes vLLM's stat line with a DP prefix::

    [2026-01-01 10:00:00 DP0] Avg prompt throughput: 0.0 tokens/s, Avg generation throughput: 123.4 tokens/s,
    Finished: 0 reqs, Unfinished: 8 reqs, Running: 8 reqs, Waiting: 0 reqs, GPU KV cache usage: 3.1%, ...

(older releases: ``DP: 0, Avg prompt throughput: ...``), so the parser is vLLM's
(:func:`pytest_dsbench.engines.vllm.logformat.parse_stat_line`).
"""

from __future__ import annotations

from pytest_dsbench.engines.base import DecodeLine
from pytest_dsbench.engines.vllm.logformat import parse_stat_line


def parse_decode_line(line: str) -> DecodeLine | None:
    """An LMDeploy stat line read (None for any other line)."""
    return parse_stat_line(line)
