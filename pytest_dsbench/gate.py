"""The verdict inside each test: limits from thresholds/<hw>.toml and regressions against stored history.

A test records its measured values through ``dsbench_gate.record(...)`` and ends with
``dsbench_gate.check()``, which fails the test with every violated limit and every regression, so the exit
code, JUnit and the summary table agree. With ``--dsbench-compare RUN`` the run hands each gate a *judge*: a
callable that compares a recorded value and its per-request samples with the same test, metric and workload in
the stored run (:meth:`pytest_dsbench.history.compare.Comparator.compare`). The gate only applies the judgement;
it never reaches into the history itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import pytest

from pytest_dsbench import metrics
from pytest_dsbench.results import MetricResult, RunResults


class Judgement(Protocol):
    """What a regression judge says of one result (:class:`pytest_dsbench.history.compare.Comparison`)."""

    @property
    def baseline_value(self) -> float | None: ...
    @property
    def change_pct(self) -> float | None: ...
    @property
    def limit_pct(self) -> float | None: ...
    @property
    def method(self) -> str | None: ...
    @property
    def regressed(self) -> bool: ...
    @property
    def refused(self) -> str | None: ...
    def message(self) -> str: ...
    def as_dict(self) -> dict[str, Any]: ...


Judge = Callable[[MetricResult], Judgement]
"""Compares a recorded result with the stored baseline."""


@dataclass
class Gate:
    """Collects one test's results and judges them: limits always, regressions when given a ``judge``."""

    test_id: str
    results: RunResults
    judge: Judge | None = None
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
        extra: dict[str, Any] | None = None,
    ) -> MetricResult:
        """Record a measured value and its raw per-request ``samples`` (same unit as the metric).

        With a ``limit`` the metric's direction decides the comparison. ``workload`` (JSON-able) identifies
        what was measured: results are compared across runs only under an equal workload. ``samples`` should
        move with the metric (per-request TPOT for ``tpot_ms_*``, per-window tok/s for throughput, 0/1 scores
        for accuracy); the regression gate's statistical test runs on them.
        """
        definition = metrics.get(metric)
        comparison: Literal["<=", ">="] | None = definition.comparison if limit is not None else None
        values = [float(s) for s in samples]
        result = MetricResult(
            test_id=self.test_id,
            metric=metric,
            unit=unit or definition.unit,
            value=float(value),
            limit=limit,
            comparison=comparison,
            samples=sample_count if sample_count is not None else len(values),
            source=limit_source,
            extra={**(extra or {}), "workload": dict(workload or {})},
            sample_values=values,
        )
        if result.passed is False:
            assert limit is not None
            self.problems.append(
                f"{metric} = {value:.4g} {result.unit}, limit {comparison} {limit:g} {result.unit} "
                f"({limit_source or 'limit'}); {result.samples} samples"
            )
        if self.judge is not None:
            judged = self.judge(result)
            result.extra["regression"] = judged.as_dict()
            result.baseline = judged.baseline_value
            result.change_pct = judged.change_pct
            if judged.refused:
                self.problems.append(judged.refused)
            elif judged.method is not None and judged.limit_pct is not None:
                result.regressed = judged.regressed
                if judged.regressed:
                    self.problems.append(judged.message())
        self.results.record(result)
        self.recorded.append(result)
        self.samples[metric] = values
        return result

    def fail(self, message: str) -> None:
        """Add a problem found by another check."""
        self.problems.append(message)

    def check(self) -> None:
        """Fail the test with every problem recorded so far."""
        if self.problems:
            pytest.fail("; ".join(self.problems), pytrace=False)
