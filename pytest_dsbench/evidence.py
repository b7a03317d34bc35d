"""How much a figure can be trusted: its sample count, its confidence interval, and the minimum evidence.

Every seed-method and SLO figure states the observations behind it and a confidence interval, defined here once:

* :func:`t_interval` -- Student's t interval of a mean, for figures that are the mean of independent repeats
  (ali prefill's input tok/s, one value per repeat) or of 1-s throughput windows;
* :func:`bootstrap_interval` -- a percentile bootstrap of any statistic (median, mean, pNN) of per-request or
  per-window samples (a latency's p99, ali decode's median tok/s per slice); deterministic (seeded).

A result with too little evidence is INVALID, as MLPerf LoadGen's runs are below their minimum duration and
query count: :func:`shortfall` says which minimum a run misses and how to fix it. The minimums themselves are
the hardware profile's ``[evidence]`` table (:class:`pytest_dsbench.thresholds.Evidence`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_dsbench.metrics import Metric, Summary

CONFIDENCE = 0.95
"""Two-sided confidence of every interval the suite reports."""
RESAMPLES = 2000
"""Bootstrap resamples (the Monte-Carlo error of a 95% bound is well under its width at this count)."""

_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
"""Two-sided 95% Student t quantiles for 1..30 degrees of freedom (above 30: 2.042 -> 1.96 by 1/dof)."""


def t_quantile_95(dof: int) -> float:
    """The two-sided 95% t quantile for ``dof`` degrees of freedom (table; interpolated in 1/dof above 30)."""
    if dof < 1:
        raise ValueError("a t interval needs at least two values")
    if dof <= len(_T95):
        return _T95[dof - 1]
    return 1.96 + (_T95[-1] - 1.96) * len(_T95) / dof


@dataclass(frozen=True)
class Interval:
    """A figure's value, its 95% interval [low, high], the observations behind it and how it was computed."""

    value: float
    low: float
    high: float
    n: int
    method: str
    confidence: float = CONFIDENCE

    @property
    def half_width_rel(self) -> float:
        """Half the interval's width relative to the value (inf for a zero value)."""
        return (self.high - self.low) / 2 / abs(self.value) if self.value else math.inf

    def shifted(self, value: float) -> Interval:
        """The same relative interval around another value (a run's aggregate, centred like its window mean)."""
        if not self.value:
            return Interval(value, value, value, self.n, self.method, self.confidence)
        scale = value / self.value
        low, high = sorted((self.low * scale, self.high * scale))
        return Interval(value, low, high, self.n, self.method, self.confidence)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["half_width_rel"] = None if math.isinf(self.half_width_rel) else round(self.half_width_rel, 6)
        return data

    def text(self) -> str:
        """``"12.3 [11.9, 12.8] (95% t, n=5)"``."""
        return f"{self.value:.4g} [{self.low:.4g}, {self.high:.4g}] ({self.confidence:.0%} {self.method}, n={self.n})"


def t_interval(values: Sequence[float]) -> Interval | None:
    """Student's t interval of the mean of ``values`` (independent repeats); None with fewer than two."""
    n = len(values)
    if n < 2:
        return None
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    half = t_quantile_95(n - 1) * math.sqrt(var / n)
    return Interval(mean, mean - half, mean + half, n, "t")


def _statistic(which: str) -> Any:
    import numpy as np

    if which == "mean":
        return lambda a: np.mean(a, axis=-1)
    if which == "median":
        return lambda a: np.median(a, axis=-1)
    if which.startswith("p") and which[1:].replace(".", "", 1).isdigit():
        q = float(which[1:])
        return lambda a: np.percentile(a, q, axis=-1)
    if which in ("max", "min", "std"):
        return lambda a: getattr(np, which)(a, axis=-1)
    raise ValueError(f"unknown statistic {which!r}; use mean, median, std, max, min or pNN")


def bootstrap_interval(values: Sequence[float], which: str = "median", *, seed: int = 0) -> Interval | None:
    """Percentile-bootstrap interval of ``which`` (mean, median, pNN, ...) of ``values``; None with fewer than two.

    The value is the statistic of the samples themselves; the bounds the 2.5% and 97.5% quantiles of the
    statistic over :data:`RESAMPLES` resamples (seeded: the same data give the same interval).
    """
    import numpy as np

    n = len(values)
    if n < 2:
        return None
    arr = np.asarray(values, dtype=float)
    stat = _statistic(which)
    rng = np.random.default_rng(seed)
    resampled = stat(arr[rng.integers(0, n, size=(RESAMPLES, n))])
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(resampled, [tail, 1 - tail])
    return Interval(float(stat(arr)), float(low), float(high), n, f"bootstrap {which}")


def interval_of(metric: Metric, summary: Summary, value: float | None = None) -> Interval | None:
    """The interval of one run's metric: a latency statistic bootstrapped over its requests, a windowed
    throughput's t interval over its 1-s windows around the run's aggregate; None where the run has no samples
    for it (totals, fractions, a run shorter than two windows)."""
    from pytest_dsbench.metrics import LatencyMetric, RunMetric

    measured = summary.values.get(metric.name, 0.0) if value is None else value
    if isinstance(metric, LatencyMetric):
        found = bootstrap_interval(summary.samples.get(metric.latency, []), metric.stat)
        return None if found is None else found.shifted(measured)
    if isinstance(metric, RunMetric) and metric.windowed:
        windows = t_interval(summary.samples.get("output_tok_s", []))
        return None if windows is None else replace(windows.shifted(measured), method="t over 1-s windows")
    return None


def samples_needed(which: str, min_samples: int, tail_samples: int) -> int:
    """Observations a statistic needs: ``min_samples``, and for a pNN enough that ``tail_samples`` values lie
    above it (p99 with 1 tail sample: 100), else the percentile is the maximum of a few samples in disguise."""
    if which.startswith("p") and which[1:].replace(".", "", 1).isdigit() and tail_samples > 0:
        q = float(which[1:]) / 100
        if q < 1:
            return max(min_samples, math.ceil(tail_samples / (1 - q) - 1e-9))
    return min_samples


def shortfall(
    *, duration_s: float, samples: int, min_duration_s: float, min_samples: int, what: str = "samples"
) -> str | None:
    """Which minimum a measurement misses (``"0.08 s < [evidence] min_duration_s 1 s"``), or None when it has
    enough."""
    missing = []
    if duration_s < min_duration_s:
        missing.append(f"it lasted {duration_s:.3g} s < [evidence] min_duration_s {min_duration_s:g} s")
    if samples < min_samples:
        missing.append(f"it has {samples} {what} < the {min_samples} it needs")
    return "; ".join(missing) or None


__all__ = [
    "CONFIDENCE",
    "Interval",
    "bootstrap_interval",
    "interval_of",
    "samples_needed",
    "shortfall",
    "t_interval",
    "t_quantile_95",
]
