"""Arrival schedules: when each request is due, as offsets in seconds from the start of the run.

``rate = inf`` sends everything at once (sglang's default). A finite rate draws inter-arrival gaps from a
gamma distribution with shape ``burstiness`` and mean ``1 / rate`` (vLLM's ``--burstiness``); burstiness 1 is
sglang's Poisson process (exponential gaps, drawn with ``np.random.exponential`` as sglang does). Unlike vLLM
the gaps are not rescaled to end at exactly N / rate, matching sglang. Offsets are absolute, so a late send
never shifts the requests after it (no drift), and the lateness is measured (``RequestRecord.send_lag_s``).
"""

from __future__ import annotations

import math

from pytest_dsbench.errors import DsbenchUsageError


def schedule(n: int, rate: float = math.inf, burstiness: float = 1.0, seed: int = 1) -> list[float]:
    """Send offsets of ``n`` requests: the first at 0, each next one a random gap later."""
    import numpy as np

    if rate <= 0:
        raise DsbenchUsageError(f"request rate must be > 0 or inf (got {rate}).")
    if burstiness <= 0:
        raise DsbenchUsageError(f"burstiness must be > 0 (got {burstiness}); 1 is Poisson, < 1 burstier.")
    if math.isinf(rate) or n == 0:
        return [0.0] * n
    rng = np.random.RandomState(seed)
    if burstiness == 1.0:
        gaps = rng.exponential(1.0 / rate, size=n - 1)
    else:
        gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n - 1)
    offsets = [0.0]
    for gap in gaps:
        offsets.append(offsets[-1] + float(gap))
    return offsets


def offered_rate(offsets: list[float]) -> float:
    """The rate the schedule asks for: requests after the first / span of the schedule (inf when all at once)."""
    span = offsets[-1] - offsets[0] if len(offsets) > 1 else 0.0
    return (len(offsets) - 1) / span if span > 0 else math.inf
