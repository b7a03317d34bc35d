"""What a load run's per-request records yield: latencies, output lengths, goodput, 1-s throughput windows.

The metric declarations (:mod:`pytest_dsbench.metrics`) compute their values from a :class:`RunData`, which
derives each per-request quantity once. Formulas follow sglang.bench_serving exactly (bench_tools.md (c)).
Records are duck-typed (:class:`RecordLike`) so that this module imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

LATENCIES = ("ttft", "ttfat", "tpot", "itl", "e2e")
"""The per-request latencies, each a family of ``{latency}_ms_{stat}`` metrics."""


# -- statistics
# ------------------------------------------------------------------------------------------------


def stat(values: Sequence[float] | Any, which: str) -> float:
    """numpy's mean / median / std (ddof=0) / linear percentile / max; an empty list gives 0 (sglang's rule)."""
    import numpy as np

    if len(values) == 0:
        return 0.0
    arr = np.asarray(values, dtype=float)
    if which == "mean":
        return float(np.mean(arr))
    if which == "median":
        return float(np.median(arr))
    if which == "std":
        return float(np.std(arr))
    if which == "max":
        return float(np.max(arr))
    if which == "min":
        return float(np.min(arr))
    if which.startswith("p"):
        return float(np.percentile(arr, float(which[1:])))
    raise ValueError(f"unknown statistic {which!r}; use mean, median, std, max, min or pNN")


# -- per-request values
# ----------------------------------------------------------------------------------------


class RecordLike(Protocol):
    """The fields of a request record the formulas read."""

    success: bool
    prompt_len: int
    max_tokens: int
    start_s: float
    end_s: float
    chunk_s: list[float]
    answer_s: float | None
    usage_completion_tokens: int | None
    retok_len: int | None


def output_len(r: RecordLike) -> int:
    """sglang's output length: the server's ``usage.completion_tokens`` when streamed, else the requested length."""
    if not r.success:
        return 0
    return r.usage_completion_tokens if r.usage_completion_tokens is not None else r.max_tokens


def ttft_s(r: RecordLike) -> float | None:
    """Seconds to the first chunk carrying text; None when the request failed or streamed no text."""
    return r.chunk_s[0] - r.start_s if r.success and r.chunk_s else None


def latency_s(r: RecordLike) -> float:
    return r.end_s - r.start_s


def itl_s(r: RecordLike) -> list[float]:
    """Gaps between consecutive text chunks (one sample per chunk, not per token: sglang's ITL)."""
    c = r.chunk_s
    return [c[i] - c[i - 1] for i in range(1, len(c))] if r.success else []


def tpot_s(r: RecordLike) -> float | None:
    """(e2e - ttft) / (output_len - 1), or None when the request has at most one output token."""
    first = ttft_s(r)
    n = output_len(r)
    if first is None or n <= 1:
        return None
    return (latency_s(r) - first) / (n - 1)


@dataclass(frozen=True)
class GoodputSlo:
    """Per-request limits of vLLM's ``--goodput`` (DistServe): a request is good when it meets every one given."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    @property
    def empty(self) -> bool:
        return self.ttft_ms is None and self.tpot_ms is None and self.e2e_ms is None

    def good(self, r: RecordLike) -> bool:
        if not r.success:
            return False
        first = ttft_s(r)
        if self.ttft_ms is not None and (first is None or first * 1000 > self.ttft_ms):
            return False
        tpot = tpot_s(r) or 0.0  # vLLM: "we regard tpot as 0 for goodput" when output <= 1 token
        if self.tpot_ms is not None and tpot * 1000 > self.tpot_ms:
            return False
        return not (self.e2e_ms is not None and latency_s(r) * 1000 > self.e2e_ms)


WINDOW_S = 1.0
"""Width of the windows behind throughput samples (sglang's peak uses the same 1-s bins)."""


def window_output_tok_s(records: Sequence[RecordLike], window_s: float = WINDOW_S) -> list[float]:
    """Output tok/s in each full ``window_s`` window between the first request's start and the last one's end.

    Each request's output tokens are spread evenly over its streamed chunks (a chunk may carry several tokens
    under MTP); the last, partial window is dropped. These are the samples the regression gate tests
    throughput on: one run's windows vary with the server's speed the way its aggregate does.
    """
    import numpy as np

    ok = [r for r in records if r.success and r.chunk_s]
    if not ok:
        return []
    t0 = min(r.start_s for r in ok)
    full_windows = int((max(r.end_s for r in ok) - t0) // window_s)
    if full_windows < 1:
        return []
    times = np.concatenate([np.asarray(r.chunk_s, dtype=float) for r in ok])
    weights = np.concatenate([np.full(len(r.chunk_s), output_len(r) / len(r.chunk_s)) for r in ok])
    bins = ((times - t0) // window_s).astype(np.int64)
    keep = bins < full_windows
    tokens = np.bincount(bins[keep], weights=weights[keep], minlength=full_windows)
    return [float(t) / window_s for t in tokens]


class RunData:
    """One run's records and what the declarations compute from them, each derived once."""

    def __init__(
        self, records: Sequence[RecordLike], duration_s: float, devices: int = 1, goodput: GoodputSlo | None = None
    ) -> None:
        self.records = records
        self.ok = [r for r in records if r.success]
        self.duration_s = duration_s
        self.devices = devices
        self.goodput = goodput

    @property
    def per_s(self) -> float:
        """1 / duration (NaN for an empty duration, which the summary turns into 0)."""
        return 1.0 / self.duration_s if self.duration_s > 0 else float("nan")

    @cached_property
    def latency_ms(self) -> dict[str, list[float]]:
        """Per-request samples of every latency in :data:`LATENCIES`, in ms, successful requests only."""
        import numpy as np

        ok = self.ok
        gaps = [np.diff(np.asarray(r.chunk_s, dtype=float)) for r in ok if len(r.chunk_s) > 1]
        return {
            "ttft": [t * 1000 for r in ok if (t := ttft_s(r)) is not None],
            "ttfat": [(r.answer_s - r.start_s) * 1000 for r in ok if r.answer_s is not None],
            "tpot": [t * 1000 for r in ok if (t := tpot_s(r)) is not None],
            "itl": (np.concatenate(gaps) * 1000).tolist() if gaps else [],
            "e2e": [latency_s(r) * 1000 for r in ok],
        }

    @cached_property
    def latency_arrays(self) -> dict[str, Any]:
        import numpy as np

        return {name: np.asarray(values, dtype=float) for name, values in self.latency_ms.items()}

    @cached_property
    def total_input(self) -> int:
        return sum(r.prompt_len for r in self.ok)

    @cached_property
    def total_output(self) -> int:
        return sum(output_len(r) for r in self.ok)

    @cached_property
    def total_retokenized(self) -> int:
        return sum(r.retok_len or 0 for r in self.ok)

    @cached_property
    def good(self) -> int | None:
        """Requests meeting every goodput limit; None when the run has no goodput limit."""
        if self.goodput is None or self.goodput.empty:
            return None
        return sum(1 for r in self.records if self.goodput.good(r))

    @cached_property
    def peaks(self) -> tuple[float, float]:
        """sglang's peak output tok/s (chunk events per 1-s bin) and peak concurrent requests (per 1-s bin)."""
        import numpy as np

        ok = self.ok
        if not ok:
            return 0.0, 0.0
        t0 = min(r.start_s for r in ok)
        events = np.fromiter((t for r in ok for t in r.chunk_s), dtype=float)
        peak_events = float(np.bincount((events - t0).astype(np.int64)).max()) if events.size else 0.0
        starts = np.array([int(r.start_s - t0) for r in ok])
        ends = np.array([int(r.end_s - t0) for r in ok])
        active = np.zeros(int(ends.max()) + 2, dtype=np.int64)
        np.add.at(active, starts, 1)
        np.add.at(active, ends + 1, -1)
        return peak_events, float(np.cumsum(active).max())
