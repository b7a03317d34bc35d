"""The verdict inside each test: limits from thresholds/<hw>.toml and (with history) regressions.

A test records its measured values through ``dsbench_gate.record(...)`` and ends with ``dsbench_gate.check()``,
which fails the test with every violated limit, so the exit code, JUnit and the summary table agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from pytest_dsbench import metrics
from pytest_dsbench.results import MetricResult, RunResults


@dataclass
class Gate:
    """Collects one test's results and judges them."""

    test_id: str
    results: RunResults
    recorded: list[MetricResult] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def record(
        self,
        metric: str,
        value: float,
        *,
        samples: Sequence[float] = (),
        sample_count: int | None = None,
        limit: float | None = None,
        limit_source: str = "",
        workload: dict[str, Any] | None = None,
        unit: str | None = None,
    ) -> MetricResult:
        """Record a measured value; with a ``limit`` the metric's direction decides the comparison."""
        definition = metrics.get(metric)
        comparison: Literal["<=", ">="] | None = None
        if limit is not None:
            comparison = "<=" if definition.direction == "lower_is_better" else ">="
        result = MetricResult(
            test_id=self.test_id, metric=metric, unit=unit or definition.unit, value=float(value), limit=limit,
            comparison=comparison, samples=sample_count if sample_count is not None else len(samples),
            source=limit_source, extra={"workload": workload or {}},
        )
        self.results.record(result)
        self.recorded.append(result)
        self.samples[metric] = [float(s) for s in samples]
        if result.passed is False:
            self.problems.append(
                f"{metric} = {value:.4g} {result.unit}, limit {comparison} {limit:g} {result.unit} "
                f"({limit_source or 'limit'}); {result.samples} samples"
            )
        return result

    def fail(self, message: str) -> None:
        """Add a problem found by another check (e.g. a regression against history)."""
        self.problems.append(message)

    def check(self) -> None:
        """Fail the test with every problem recorded so far."""
        if self.problems:
            pytest.fail("; ".join(self.problems), pytrace=False)
