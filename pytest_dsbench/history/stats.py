"""Statistics for the noise-aware regression gate: Mann-Whitney U and a bootstrap interval, numpy only.

Why two tests. A regression gate on per-request samples must not trip on noise, and must be stated at a
confidence the user can read in the failure message:

* :func:`mann_whitney_u` (rank-sum test, normal approximation with tie and continuity correction, identical to
  ``scipy.stats.mannwhitneyu(..., method="asymptotic")``) asks whether the new samples are *stochastically*
  worse than the baseline's. It needs no distributional assumption and suits means, medians, throughput and
  0/1 accuracy scores.
* :func:`bootstrap_change` resamples both runs to put a one-sided interval on the relative change of a *tail*
  statistic (p90/p99/max/std), where a rank test answers a different question than the one the metric asks.

Both are deterministic: the bootstrap's generator is seeded from the test and metric names, so a rerun of
the same data gives the same verdict.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Alternative = Literal["greater", "less", "two-sided"]
FloatArray = npt.NDArray[np.float64]

#: Fewest samples per run for either test; below this a change is reported but never judged significant.
MIN_SAMPLES = 8
#: Bootstrap resamples; 4000 keeps the Monte-Carlo error of a 1% tail quantile near 0.15 percentage points.
BOOTSTRAP_RESAMPLES = 4000
_MAX_CELLS_PER_CHUNK = 4_000_000


@dataclass(frozen=True)
class MannWhitneyResult:
    """U statistic of the first sample, its z score and the p-value for the chosen alternative."""

    u: float
    z: float
    p_value: float


def _normal_sf(z: float) -> float:
    """Survival function of the standard normal distribution, 1 - Phi(z)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def average_ranks(values: FloatArray) -> tuple[FloatArray, FloatArray]:
    """1-based ranks with ties given their average rank, and the size of every tie group."""
    _unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts).astype(np.float64)
    average = upper - (counts - 1) / 2.0
    return average[inverse], counts.astype(np.float64)


def mann_whitney_u(
    x: Sequence[float], y: Sequence[float], alternative: Alternative = "greater"
) -> MannWhitneyResult:
    """Mann-Whitney U test of ``x`` against ``y`` (normal approximation, tie and continuity corrected).

    ``alternative="greater"`` tests whether ``x`` tends to be larger than ``y``. The returned ``u`` is always
    the statistic of ``x`` (as scipy reports it). With no variation at all (every value tied) the p-value is
    1.
    """
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    n1, n2 = a.size, b.size
    if n1 == 0 or n2 == 0:
        raise ValueError("mann_whitney_u needs at least one value in each sample")
    ranks, ties = average_ranks(np.concatenate([a, b]))
    u1 = float(ranks[:n1].sum() - n1 * (n1 + 1) / 2.0)
    u2 = n1 * n2 - u1
    n = n1 + n2
    mean = n1 * n2 / 2.0
    tie_term = float((ties**3 - ties).sum()) / (n * (n - 1)) if n > 1 else 0.0
    variance = n1 * n2 / 12.0 * ((n + 1) - tie_term)
    if variance <= 0:
        return MannWhitneyResult(u=u1, z=0.0, p_value=1.0)
    sigma = math.sqrt(variance)
    if alternative == "greater":
        z = (u1 - mean - 0.5) / sigma
        p = _normal_sf(z)
    elif alternative == "less":
        z = (u2 - mean - 0.5) / sigma
        p = _normal_sf(z)
    else:
        z = (max(u1, u2) - mean - 0.5) / sigma
        p = min(1.0, 2.0 * _normal_sf(z))
    return MannWhitneyResult(u=u1, z=z, p_value=p)


# -- statistics a metric name implies ------------------------------------------------------------------------
Statistic = Callable[[FloatArray], FloatArray]
_PERCENTILE = re.compile(r"_p(\d{1,2}(?:\.\d+)?)$")


def statistic_of(metric: str) -> tuple[str, Statistic]:
    """The statistic a metric name reports (``tpot_ms_p99`` -> p99) as a row-wise function over a 2-D array.

    Names without a statistic suffix (``output_tok_s``, ``accuracy``) are treated as means of their samples.
    """
    match = _PERCENTILE.search(metric)
    if match:
        q = float(match.group(1))
        return f"p{match.group(1)}", lambda rows: np.percentile(rows, q, axis=-1)
    if metric.endswith("_median"):
        return "median", lambda rows: np.median(rows, axis=-1)
    if metric.endswith("_max"):
        return "max", lambda rows: np.max(rows, axis=-1)
    if metric.endswith("_min"):
        return "min", lambda rows: np.min(rows, axis=-1)
    if metric.endswith("_std"):
        return "std", lambda rows: np.std(rows, axis=-1)
    return "mean", lambda rows: np.mean(rows, axis=-1)


def is_tail_statistic(metric: str) -> bool:
    """True for statistics of a distribution's tail or spread, which the bootstrap judges instead of U."""
    name, _ = statistic_of(metric)
    return name in ("max", "min", "std") or (name.startswith("p") and float(name[1:]) >= 75)


@dataclass(frozen=True)
class BootstrapResult:
    """Bootstrap of the relative change of a statistic, signed so that positive means worse.

    ``lower_pct`` is the one-sided lower confidence bound of the worse-change: when it is above zero the new
    run is worse with at least the stated confidence. ``p_value`` is the share of resamples showing no
    worsening (the achieved significance level).
    """

    statistic: str
    change_pct: float
    lower_pct: float
    upper_pct: float
    p_value: float
    resamples: int


def seed_for(*parts: str) -> int:
    """A stable 64-bit seed from names, so bootstrap verdicts are reproducible run to run."""
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "little")


def _resampled(
    values: FloatArray, statistic: Statistic, resamples: int, rng: np.random.Generator
) -> FloatArray:
    n = values.size
    rows_per_chunk = max(1, _MAX_CELLS_PER_CHUNK // max(n, 1))
    out: list[FloatArray] = []
    done = 0
    while done < resamples:
        rows = min(rows_per_chunk, resamples - done)
        idx = rng.integers(0, n, size=(rows, n))
        out.append(np.asarray(statistic(values[idx]), dtype=np.float64))
        done += rows
    return np.concatenate(out)


def bootstrap_change(
    baseline: Sequence[float],
    new: Sequence[float],
    metric: str,
    *,
    higher_is_better: bool,
    confidence: float,
    seed: int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> BootstrapResult:
    """Percentile bootstrap of ``(stat(new) / stat(baseline) - 1) * 100``, signed so positive is worse."""
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0.5 and 1, got {confidence}")
    base = np.asarray(baseline, dtype=np.float64)
    cur = np.asarray(new, dtype=np.float64)
    if base.size == 0 or cur.size == 0:
        raise ValueError("bootstrap_change needs at least one value in each sample")
    name, statistic = statistic_of(metric)
    rng = np.random.default_rng(seed)
    base_stats = _resampled(base, statistic, resamples, rng)
    new_stats = _resampled(cur, statistic, resamples, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.where(np.abs(base_stats) > 0, (new_stats - base_stats) / np.abs(base_stats) * 100.0, 0.0)
    if higher_is_better:
        change = -change
    point_base = float(statistic(base[np.newaxis, :])[0])
    point_new = float(statistic(cur[np.newaxis, :])[0])
    point = 0.0 if point_base == 0 else (point_new - point_base) / abs(point_base) * 100.0
    if higher_is_better:
        point = -point
    alpha = 1.0 - confidence
    return BootstrapResult(
        statistic=name,
        change_pct=point,
        lower_pct=float(np.quantile(change, alpha)),
        upper_pct=float(np.quantile(change, confidence)),
        p_value=float(np.mean(change <= 0.0)),
        resamples=resamples,
    )


# -- run-to-run noise ---------------------------------------------------------------------------------------
#: Fewest earlier comparable runs before the run-to-run test is used.
MIN_HISTORY_RUNS = 5


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 3e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < eps:
            break
    return h


def regularized_beta(x: float, a: float, b: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_sf(t: float, dof: float) -> float:
    """P(T > t) for Student's t distribution with ``dof`` degrees of freedom."""
    tail = 0.5 * regularized_beta(dof / (dof + t * t), dof / 2.0, 0.5)
    return tail if t > 0 else 1.0 - tail


@dataclass(frozen=True)
class RunToRunResult:
    """Whether a new run's value lies beyond the run-to-run spread of earlier runs (one-sided)."""

    runs: int
    mean: float
    noise_pct: float
    p_value: float


def run_to_run(history: Sequence[float], value: float, *, higher_is_better: bool) -> RunToRunResult:
    """One-sided t prediction test: is ``value`` worse than a new draw from the runs in ``history`` would be?

    This sees what a test on one run's per-request samples cannot: whole runs that drift together (a busy
    machine, thermal throttling, another tenant). Needs at least two values; callers wait for
    :data:`MIN_HISTORY_RUNS`.
    """
    k = len(history)
    if k < 2:
        raise ValueError("run_to_run needs at least two earlier values")
    values = np.asarray(history, dtype=np.float64)
    mean = float(values.mean())
    std = float(values.std(ddof=1))
    worse = value < mean if higher_is_better else value > mean
    noise = std / abs(mean) * 100.0 if mean else 0.0
    if std == 0.0:
        return RunToRunResult(runs=k, mean=mean, noise_pct=noise, p_value=0.0 if worse else 1.0)
    t = (value - mean) / (std * math.sqrt(1.0 + 1.0 / k))
    if higher_is_better:
        t = -t
    return RunToRunResult(runs=k, mean=mean, noise_pct=noise, p_value=student_t_sf(t, k - 1))
