"""Agreement of this suite's numbers with a reference tool's on the same workload, round by round.

Each round pairs one run of ours with one of the reference tool's, back to back, so drift of the engine or the
host hits both alike. Per metric, the median over rounds of the relative difference must be within a limit.
A metric that misses it by no more than either tool's rounds spread among themselves cannot be said to disagree:
the same engine on the same host varied that much between runs of one client, so the host is too noisy to
measure the difference that finely, and the verdict on it is *inconclusive*. A miss larger than both spreads is
a disagreement, however noisy the host.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Agreement:
    """One metric's comparison: per-round values, the median relative difference and this suite's own spread."""

    metric: str
    ours: tuple[float, ...]
    theirs: tuple[float, ...]
    limit_pct: float

    @property
    def diff_pct(self) -> float:
        """Median over rounds of ``|ours - theirs| / theirs``, in percent (infinite where theirs is 0)."""
        return statistics.median(
            abs(a - b) / abs(b) * 100 if b else math.inf for a, b in zip(self.ours, self.theirs, strict=True)
        )

    @property
    def own_spread_pct(self) -> float:
        """(max - min) / mean of this suite's own rounds, in percent."""
        return _spread_pct(self.ours)

    @property
    def their_spread_pct(self) -> float:
        """(max - min) / mean of the reference tool's rounds, in percent."""
        return _spread_pct(self.theirs)

    @property
    def noise_pct(self) -> float:
        """The comparison's noise floor: the larger of the two tools' round-to-round spreads."""
        return max(self.own_spread_pct, self.their_spread_pct)

    @property
    def agrees(self) -> bool:
        return self.diff_pct <= self.limit_pct

    @property
    def inconclusive(self) -> bool:
        """Missed the limit, but by no more than either tool's rounds differ among themselves."""
        return not self.agrees and self.diff_pct <= self.noise_pct

    def rounds_text(self) -> str:
        return ", ".join(f"{a:.4g} vs {b:.4g}" for a, b in zip(self.ours, self.theirs, strict=True))


def _spread_pct(values: Sequence[float]) -> float:
    mean = statistics.fmean(values)
    return (max(values) - min(values)) / mean * 100 if mean else 0.0


def compare_rounds(
    ours: Sequence[dict[str, float]], theirs: Sequence[dict[str, float]], metrics: Sequence[str], limit_pct: float
) -> list[Agreement]:
    """One :class:`Agreement` per metric from paired rounds (``ours[i]`` ran next to ``theirs[i]``)."""
    if len(ours) != len(theirs) or not ours:
        raise ValueError(f"need paired rounds, got {len(ours)} of ours and {len(theirs)} of the reference tool's")
    return [
        Agreement(metric, tuple(r[metric] for r in ours), tuple(r[metric] for r in theirs), limit_pct)
        for metric in metrics
    ]


def inconclusive_only(agreements: Sequence[Agreement]) -> bool:
    """Every metric that missed is inconclusive, and at least one missed: the run says nothing either way."""
    missed = [a for a in agreements if not a.agrees]
    return bool(missed) and all(a.inconclusive for a in missed)
