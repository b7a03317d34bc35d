"""SGLang's decode-throughput log line (read by seed 003's ali decode method, :mod:`pytest_dsbench.methods.ali`).

The scheduler writes, every ``--decode-log-interval`` steps::

    [2026-03-14 04:59:11 TP0] Decode batch, #running-req: 20, #token: 2326, token usage: 0.14,
    cuda graph: True, gen throughput (token/s): 1174.06, #queue-req: 6

(older releases write ``Decode batch. #running-req: ...``; 0.5.17 with ``SGLANG_LOG_FORWARD_ITERS`` writes
``Decode batch [412], #running-req: ...``).
"""

from __future__ import annotations

import re

from pytest_dsbench.engines.base import DecodeLine

_DECODE_BATCH = re.compile(
    r"Decode batch(?: \[\d+\])?[.,]\s*#running-req:\s*(\d+).*?gen throughput \(token/s\):\s*([0-9.]+)"
)


def parse_decode_line(line: str) -> DecodeLine | None:
    """A ``Decode batch`` line read (None for any other line)."""
    m = _DECODE_BATCH.search(line)
    return (int(m.group(1)), float(m.group(2)), "sglang") if m else None
