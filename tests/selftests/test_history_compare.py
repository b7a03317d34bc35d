"""The regression judgement on its own: direction, noise, limits, refusals (no pytest run, no engine)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_dsbench.errors import DsbenchUsageError
from pytest_dsbench.history import document
from pytest_dsbench.history.compare import Comparator, RegressLimits, compare_runs, validate_limits
from pytest_dsbench.history.document import StoredRun
from pytest_dsbench.results import MetricResult

TEST = "pytest_dsbench/suite/test_slo.py::test_decode"
WORKLOAD = {"num_prompts": 64, "input_len": 128}
PROV = {
    "engine": "vllm",
    "engine_version": "0.32.0",
    "model": "tiny-r1",
    "hw": "cpu",
    "time": "2026-01-01T00:00:00",
}


def result(
    metric: str,
    samples: list[float] | np.ndarray,
    *,
    value: float | None = None,
    workload: dict[str, Any] | None = None,
    unit: str = "ms",
) -> MetricResult:
    values = [float(v) for v in samples]
    return MetricResult(
        test_id=TEST,
        metric=metric,
        unit=unit,
        value=float(np.mean(values)) if value is None else value,
        samples=len(values),
        extra={"workload": dict(WORKLOAD if workload is None else workload)},
        sample_values=values,
    )


def stored(*results: MetricResult, **prov: Any) -> StoredRun:
    doc = document.build(list(results), {**PROV, **prov}, exitstatus=0, interrupted=False, run_name="x")
    return document.parse(Path("vllm-cpu/m/0001_x.json"), doc)


def comparator(baseline: StoredRun, limits: dict[str, float] | None = None, **kwargs: Any) -> Comparator:
    return Comparator(baseline, RegressLimits(cli=limits if limits is not None else {"*": 10.0}), **kwargs)


RNG = np.random.default_rng(7)
BASE_TPOT = RNG.normal(40, 3, 200)


def test_a_slower_tpot_regresses() -> None:
    judged = comparator(stored(result("tpot_ms_mean", BASE_TPOT))).compare(
        result("tpot_ms_mean", BASE_TPOT * 1.3)
    )
    assert judged.regressed and judged.method == "mann-whitney-u"
    assert judged.change_pct == pytest.approx(30.0, abs=0.1)
    assert "expected at most 10% worse (--dsbench-regress)" in judged.message()
    assert "99% confidence" in judged.message()


def test_a_faster_tpot_is_an_improvement() -> None:
    judged = comparator(stored(result("tpot_ms_mean", BASE_TPOT))).compare(
        result("tpot_ms_mean", BASE_TPOT * 0.7)
    )
    assert not judged.regressed and judged.change_pct is not None and judged.change_pct < 0
    assert judged.change_text().endswith("(better)")


def test_a_throughput_drop_regresses_and_a_rise_does_not() -> None:
    base = RNG.normal(100, 5, 100)
    gate = comparator(stored(result("output_tok_s", base, unit="tok/s")))
    assert gate.compare(result("output_tok_s", base * 0.8, unit="tok/s")).regressed
    gate = comparator(stored(result("output_tok_s", base, unit="tok/s")))
    assert not gate.compare(result("output_tok_s", base * 1.2, unit="tok/s")).regressed


def test_an_accuracy_drop_on_per_item_scores_regresses() -> None:
    base = [1.0] * 95 + [0.0] * 5
    new = [1.0] * 70 + [0.0] * 30
    judged = comparator(stored(result("accuracy", base, unit="fraction"))).compare(
        result("accuracy", new, unit="fraction")
    )
    assert judged.regressed
    assert judged.change_pct == pytest.approx(26.3, abs=0.1)


def test_a_change_beyond_the_limit_but_within_noise_does_not_regress() -> None:
    noisy = np.random.default_rng(3)
    base, new = noisy.normal(40, 20, 8).clip(1), noisy.normal(48, 20, 8).clip(1)
    judged = comparator(stored(result("tpot_ms_mean", base))).compare(
        result("tpot_ms_mean", new, value=float(np.mean(base)) * 1.2)
    )
    assert not judged.significant and not judged.regressed
    assert judged.note == "change exceeds the limit but is within noise"


def test_a_significant_change_within_the_limit_does_not_regress() -> None:
    judged = comparator(stored(result("tpot_ms_mean", BASE_TPOT))).compare(
        result("tpot_ms_mean", BASE_TPOT + 2)
    )
    assert judged.significant and not judged.regressed
    assert judged.note == "significant change within the limit"


def test_a_metric_without_a_limit_is_compared_but_never_regresses() -> None:
    judged = comparator(stored(result("tpot_ms_mean", BASE_TPOT)), limits={}).compare(
        result("tpot_ms_mean", BASE_TPOT * 2)
    )
    assert judged.significant and not judged.regressed
    assert judged.note == "no regression limit for this metric"


def test_too_few_samples_are_reported_not_judged() -> None:
    judged = comparator(stored(result("tpot_ms_mean", [40.0] * 5))).compare(
        result("tpot_ms_mean", [80.0] * 5)
    )
    assert judged.method is None and not judged.regressed
    assert judged.note == "not tested: 5 vs 5 samples (need 8 per run) and 1 earlier runs (need 5)"


def test_a_tail_metric_is_judged_by_the_bootstrap() -> None:
    tail = np.concatenate([BASE_TPOT[:180], BASE_TPOT[180:] * 3])
    judged = comparator(
        stored(result("tpot_ms_p99", BASE_TPOT, value=float(np.percentile(BASE_TPOT, 99))))
    ).compare(result("tpot_ms_p99", tail, value=float(np.percentile(tail, 99))))
    assert judged.method == "bootstrap" and judged.regressed
    assert "bootstrap of the p99" in judged.message()


def test_another_workload_is_refused_and_force_compares_anyway() -> None:
    baseline = stored(result("tpot_ms_mean", BASE_TPOT))
    other = {"num_prompts": 32, "input_len": 128}
    judged = comparator(baseline).compare(result("tpot_ms_mean", BASE_TPOT, workload=other))
    assert judged.refused is not None and "the workload differs (num_prompts 64 -> 32)" in judged.refused
    forced = comparator(baseline, force=True).compare(result("tpot_ms_mean", BASE_TPOT * 1.5, workload=other))
    assert forced.refused is None and forced.regressed and "forced: workload differs" in forced.note


def test_another_model_is_refused() -> None:
    gate = comparator(
        stored(result("tpot_ms_mean", BASE_TPOT)), identity=lambda: {"engine": "vllm", "model": "DeepSeek-R1"}
    )
    judged = gate.compare(result("tpot_ms_mean", BASE_TPOT))
    assert judged.refused is not None
    assert "model tiny-r1 (baseline) vs DeepSeek-R1 (this run)" in judged.refused


def test_a_result_without_baseline_is_noted() -> None:
    judged = comparator(stored(result("tpot_ms_mean", BASE_TPOT))).compare(result("ttft_ms_mean", BASE_TPOT))
    assert judged.baseline_value is None and judged.note == "no baseline result for this test and metric"


def test_sweep_points_are_matched_by_workload() -> None:
    low, high = {"max_concurrency": 1}, {"max_concurrency": 8}
    baseline = stored(
        result("tpot_ms_mean", BASE_TPOT, workload=low), result("tpot_ms_mean", BASE_TPOT * 2, workload=high)
    )
    gate = comparator(baseline)
    assert not gate.compare(result("tpot_ms_mean", BASE_TPOT * 2, workload=high)).regressed
    assert gate.compare(result("tpot_ms_mean", BASE_TPOT * 2, workload=low)).regressed


def test_command_line_limits_beat_the_profile_and_patterns_match() -> None:
    limits = RegressLimits(cli={"tpot_ms_*": 3.0}, profile={"tpot_ms_mean": 25.0, "output_tok_s": 5.0})
    assert limits.limit_for("tpot_ms_mean") == (3.0, "--dsbench-regress")
    assert limits.limit_for("output_tok_s") == (5.0, "hw profile [regress_pct]")
    assert limits.limit_for("accuracy") is None


def test_unknown_metrics_in_limits_are_usage_errors() -> None:
    with pytest.raises(
        DsbenchUsageError, match=r"unknown metric 'tpot_ms_meen'\. Did you mean: tpot_ms_mean"
    ):
        validate_limits({"tpot_ms_meen": 5}, "--dsbench-regress")
    with pytest.raises(DsbenchUsageError, match=r"pattern 'nothing_\*' matches no metric"):
        validate_limits({"nothing_*": 5}, "--dsbench-regress")


def test_compare_runs_refuses_another_engine_unless_forced() -> None:
    base = stored(result("tpot_ms_mean", BASE_TPOT), engine="sglang")
    new = stored(result("tpot_ms_mean", BASE_TPOT * 1.5))
    with pytest.raises(DsbenchUsageError, match=r"engine sglang \(baseline\) vs vllm \(this run\)"):
        compare_runs(base, new, RegressLimits(cli={"*": 10}))
    judged, refusals = compare_runs(base, new, RegressLimits(cli={"*": 10}), force=True)
    assert [j.regressed for j in judged] == [True] and refusals == []


def test_unchanged_reruns_rarely_trip_the_gate() -> None:
    """False-positive rate of the judgement itself over 400 pairs of draws of one distribution.

    With the limit (5%) below what 64 samples can resolve, the rate is bounded by 1 - confidence (1%)."""
    rng = np.random.default_rng(11)
    trips = 0
    for _ in range(400):
        base, new = rng.lognormal(3.7, 0.2, 64), rng.lognormal(3.7, 0.2, 64)
        gate = comparator(stored(result("tpot_ms_mean", base)), limits={"tpot_ms_mean": 5.0})
        trips += gate.compare(result("tpot_ms_mean", new)).regressed
    assert trips / 400 <= 0.02, f"{trips} of 400 unchanged comparisons regressed"


def history_of(values: list[float], samples_scale: float = 1.0) -> list[StoredRun]:
    """Earlier runs whose tpot_ms_mean values are ``values`` (samples scaled around each value)."""
    return [stored(result("tpot_ms_mean", BASE_TPOT / 40 * v * samples_scale, value=v)) for v in values]


def test_a_whole_run_shift_within_the_run_to_run_noise_does_not_regress() -> None:
    runs = history_of([40, 52, 38, 47, 55, 41])
    gate = comparator(runs[-1], history=runs)
    judged = gate.compare(result("tpot_ms_mean", BASE_TPOT * 1.4, value=56.0))
    assert judged.method == "mann-whitney-u+run-to-run" and judged.history_runs == 6
    assert not judged.regressed and judged.note == "change exceeds the limit but is within noise"
    assert "run-to-run t test over 6 earlier runs (noise 15." in judged.detail


def test_a_shift_beyond_the_run_to_run_noise_regresses() -> None:
    runs = history_of([40, 41, 39, 40.5, 40])
    judged = comparator(runs[-1], history=runs).compare(result("tpot_ms_mean", BASE_TPOT * 1.3, value=52.0))
    assert judged.regressed and judged.history_p_value is not None and judged.history_p_value < 0.01


def test_a_value_without_samples_is_judged_against_earlier_runs() -> None:
    runs = [stored(result("output_tok_s", [], value=v, unit="tok/s")) for v in (100, 103, 98, 101, 99)]
    gate = comparator(runs[-1], history=runs)
    dropped = gate.compare(result("output_tok_s", [], value=80.0, unit="tok/s"))
    assert dropped.method == "run-to-run" and dropped.regressed
    steady = comparator(runs[-1], history=runs).compare(result("output_tok_s", [], value=97.0, unit="tok/s"))
    assert not steady.regressed
