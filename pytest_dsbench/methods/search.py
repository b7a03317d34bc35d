"""The search for the largest load point that meets a set of limits (seed 003's tencent search, generalised).

A *point* is an integer: a max-concurrency, or a request rate in steps of a resolution (the capacity method).
The top of the range is probed first (a fast engine is done in one probe), then halved while it fails, then
integer bisection; what is probed is assumed to get worse with load (a non-monotone answer shows in the probe
history). Probes and time are bounded: a probe is told the seconds left, and one left with too few samples
does not pass. The best passing point and the lowest failing one above it bracket the answer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_dsbench.workloads.tencent import DEFAULT_MAX_PROBES, DEFAULT_TIME_BUDGET_S

BRACKET = "search bracket (best passing point, lowest failing one above it; high None: none failed)"
"""How a search result's interval is made (its ``extra.interval.method``)."""


@dataclass
class Probe:
    """One load point of the search."""

    concurrency: int
    value: float
    samples: int
    error_rate: float
    passed: bool
    raw: str = ""
    values: dict[str, list[float]] = field(default_factory=dict)
    """Each limited metric's value in each repeat of the probe (the capacity search; empty for tencent's)."""
    why: str = ""
    """Why the probe failed: the limits it missed, or too few samples."""


@dataclass
class SearchResult:
    """The largest concurrency that met the limit (None: not even the lowest), and every probe."""

    best: int | None
    probes: list[Probe]
    stopped: str
    low: int
    high: int
    criteria: dict[str, Any] = field(default_factory=dict)
    """What a probe had to meet (for the search's JSON: the tencent search's statistic and limit_ms)."""

    @property
    def bracket(self) -> tuple[int | None, int | None]:
        """The best passing point and the lowest failing one above it (None: none failed): the answer lies in
        between, so the bracket is the search's interval."""
        best = self.best
        above = [p.concurrency for p in self.probes if not p.passed and (best is None or p.concurrency > best)]
        return self.best, min(above) if above else None

    def as_json(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k not in ("probes", "criteria")},
            **self.criteria,
            "bracket": list(self.bracket),
            "probes": [asdict(p) for p in self.probes],
        }


def search(
    probe: Callable[[int, float], Probe],
    low: int,
    high: int,
    *,
    max_probes: int = DEFAULT_MAX_PROBES,
    time_budget_s: float = DEFAULT_TIME_BUDGET_S,
    criteria: dict[str, Any] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SearchResult:
    """Largest passing concurrency in [low, high], within ``max_probes`` probes and ``time_budget_s``.

    The top is probed first (a fast engine is done in one probe); while probes fail the concurrency is halved
    (high concurrency finishes its samples soonest; the slow sequential bottom is probed only when everything
    above failed); then integer bisection between the last failing and the first passing concurrency.
    ``probe(concurrency, seconds_left)`` runs one load point and must stop sending when the time is up.
    """
    if low < 1 or high < low:
        raise ValueError(f"search range [{low}, {high}] is empty")
    start = clock()
    probes: list[Probe] = []

    def result(best: int | None, stopped: str) -> SearchResult:
        return SearchResult(best, probes, stopped, low, high, dict(criteria or {}))

    def over_budget() -> str | None:
        if len(probes) >= max_probes:
            return f"max_probes ({max_probes})"
        if clock() - start >= time_budget_s:
            return f"time budget ({time_budget_s:g} s)"
        return None

    def run(concurrency: int) -> Probe:
        outcome = probe(concurrency, max(1.0, time_budget_s - (clock() - start)))
        probes.append(outcome)
        return outcome

    bad = high
    if run(high).passed:
        return result(high, "top of the range passes")
    while True:  # halve down until a concurrency passes
        if bad == low:
            return result(None, "the lowest concurrency fails")
        if (reason := over_budget()) is not None:
            return result(None, reason)
        candidate = max(low, bad // 2)
        if run(candidate).passed:
            good = candidate
            break
        bad = candidate
    while bad - good > 1:
        if (reason := over_budget()) is not None:
            return result(good, reason)
        mid = (good + bad) // 2
        if run(mid).passed:
            good = mid
        else:
            bad = mid
    return result(good, "converged")


__all__ = ["BRACKET", "Probe", "SearchResult", "search"]
