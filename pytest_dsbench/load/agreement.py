"""Agreement of this suite's numbers with a reference tool's on the same workload, round by round.

Each round pairs one run of ours with one of the reference tool's, back to back or side by side
(:mod:`pytest_dsbench.load.side_by_side`), so drift of the engine or the host hits both alike. Per metric,
the median over rounds of the relative difference must be within a limit.

A miss is a *disagreement* when every round differs in the same direction (a sign test: with 5 rounds, a
difference that is noise alone points the same way in all of them with probability 1/16). When the rounds
differ in both directions the difference is not systematic: the host was too noisy to measure it that finely,
and the verdict on that metric is *inconclusive*.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Agreement:
    """One metric's comparison: per-round values of both tools and the limit on their relative difference."""

    metric: str
    ours: tuple[float, ...]
    theirs: tuple[float, ...]
    limit_pct: float

    @property
    def round_diffs_pct(self) -> tuple[float, ...]:
        """Signed ``(ours - theirs) / theirs`` per round, in percent (infinite where theirs is 0)."""
        return tuple((a - b) / abs(b) * 100 if b else math.inf for a, b in zip(self.ours, self.theirs, strict=True))

    @property
    def diff_pct(self) -> float:
        """Median over rounds of ``|ours - theirs| / theirs``, in percent."""
        return statistics.median(abs(d) for d in self.round_diffs_pct)

    @property
    def agrees(self) -> bool:
        return self.diff_pct <= self.limit_pct

    @property
    def systematic(self) -> bool:
        """Every round differs in the same direction."""
        diffs = self.round_diffs_pct
        return all(d > 0 for d in diffs) or all(d < 0 for d in diffs)

    @property
    def inconclusive(self) -> bool:
        """Missed the limit, but the rounds differ in both directions: noise, not a measured disagreement."""
        return not self.agrees and not self.systematic

    def rounds_text(self) -> str:
        return ", ".join(f"{a:.4g} vs {b:.4g}" for a, b in zip(self.ours, self.theirs, strict=True))


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
