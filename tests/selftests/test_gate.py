"""The gate applies limits always and a regression judge's verdict when the run hands it one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from pytest_dsbench.gate import Gate
from pytest_dsbench.results import MetricResult, RunResults


@dataclass
class Verdict:
    """A judge's answer, shaped like :class:`pytest_dsbench.history.compare.Comparison`."""

    regressed: bool
    refused: str | None = None
    baseline_value: float | None = 40.0
    change_pct: float | None = 25.0
    limit_pct: float | None = 10.0
    method: str | None = "mann-whitney"

    def message(self) -> str:
        return f"tpot_ms_mean regressed: baseline {self.baseline_value}, change +{self.change_pct}%"

    def as_dict(self) -> dict[str, Any]:
        return {"regressed": self.regressed}


def judge_saying(verdict: Verdict) -> Any:
    def judge(result: MetricResult) -> Verdict:
        return verdict

    return judge


def test_a_gate_without_a_judge_applies_only_limits() -> None:
    gate = Gate("t::x", RunResults())
    result = gate.record("tpot_ms_mean", 30.0, limit=50.0)
    gate.check()
    assert result.regressed is None and result.baseline is None


def test_a_judged_regression_fails_the_test_with_the_judges_message() -> None:
    gate = Gate("t::x", RunResults(), judge=judge_saying(Verdict(regressed=True)))
    result = gate.record("tpot_ms_mean", 50.0, limit=60.0)
    assert result.regressed is True and result.baseline == 40.0 and result.verdict == "REGRESSED"
    with pytest.raises(pytest.fail.Exception, match=r"tpot_ms_mean regressed: baseline 40\.0"):
        gate.check()


def test_a_refused_comparison_fails_with_the_refusal() -> None:
    gate = Gate("t::x", RunResults(), judge=judge_saying(Verdict(regressed=False, refused="other model")))
    gate.record("tpot_ms_mean", 30.0)
    with pytest.raises(pytest.fail.Exception, match="other model"):
        gate.check()


def test_a_judged_result_within_noise_passes() -> None:
    gate = Gate("t::x", RunResults(), judge=judge_saying(Verdict(regressed=False)))
    result = gate.record("tpot_ms_mean", 41.0)
    gate.check()
    assert result.regressed is False and result.verdict == "PASS"
