"""Measured results of one run (SLO, throughput, accuracy), gathered for the summary table and history.

Tests record through the ``dsbench_results`` fixture; the verdict itself is asserted inside the test, so the
exit code, JUnit and this table always agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass
class MetricResult:
    """One measured value with its limit and verdict."""

    test_id: str
    metric: str
    unit: str
    value: float
    limit: float | None = None
    comparison: Literal["<=", ">="] | None = None
    samples: int = 0
    baseline: float | None = None
    change_pct: float | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        """Whether the value meets its limit (None when there is no limit)."""
        if self.limit is None or self.comparison is None:
            return None
        return self.value <= self.limit if self.comparison == "<=" else self.value >= self.limit

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data


@dataclass
class RunResults:
    """Every result recorded in this session, in recording order."""

    items: list[MetricResult] = field(default_factory=list)

    def record(self, result: MetricResult) -> MetricResult:
        self.items.append(result)
        return result

    def as_dicts(self) -> list[dict[str, Any]]:
        return [item.as_dict() for item in self.items]
