"""Measured results of one run (SLO, throughput, accuracy), gathered for the summary table and history.

Tests record through the ``dsbench_gate`` fixture (or ``dsbench_results`` directly); the verdict itself is
asserted inside the test, so the exit code, JUnit and this table always agree. At the end of the session the
results, with their raw per-request samples, are stored in the history (:mod:`pytest_dsbench.history`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass
class MetricResult:
    """One measured value with its limit, its change against a stored baseline, and the verdict."""

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
    #: Raw per-request samples (metric unit); stored in the history, left out of ``as_dict``.
    sample_values: list[float] = field(default_factory=list, repr=False)
    #: True when the regression gate judged this result worse than the baseline; None when not compared.
    regressed: bool | None = None

    @property
    def passed(self) -> bool | None:
        """Whether the value meets its limit (None when there is no limit)."""
        if self.limit is None or self.comparison is None:
            return None
        return self.value <= self.limit if self.comparison == "<=" else self.value >= self.limit

    @property
    def verdict(self) -> Literal["PASS", "FAIL", "REGRESSED", "-"]:
        """FAIL when the limit is missed, REGRESSED when only the regression gate tripped, PASS when
        checked."""
        if self.passed is False:
            return "FAIL"
        if self.regressed:
            return "REGRESSED"
        if self.passed is True or self.regressed is False:
            return "PASS"
        return "-"

    @property
    def workload(self) -> dict[str, Any]:
        """The workload the value was measured under (as given to ``Gate.record``)."""
        workload = self.extra.get("workload")
        return workload if isinstance(workload, dict) else {}

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("sample_values")
        data["passed"] = self.passed
        data["verdict"] = self.verdict
        return data


@dataclass(frozen=True)
class InvalidResult:
    """A test whose measurement was INVALID (the client was the bottleneck, too little evidence, a warm cache):
    no value was judged, and the report says why rather than leaving the test out."""

    test_id: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"test_id": self.test_id, "message": self.message}


@dataclass
class RunResults:
    """Every result recorded in this session, in recording order, and the tests whose run was INVALID."""

    items: list[MetricResult] = field(default_factory=list)
    invalid: list[InvalidResult] = field(default_factory=list)

    def record(self, result: MetricResult) -> MetricResult:
        self.items.append(result)
        return result

    def as_dicts(self) -> list[dict[str, Any]]:
        return [item.as_dict() for item in self.items]
