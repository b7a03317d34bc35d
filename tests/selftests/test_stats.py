"""The regression gate's statistics: Mann-Whitney U against scipy's values, and the bootstrap's behaviour.

Reference values were computed once with ``scipy.stats.mannwhitneyu(x, y, alternative=...,
method="asymptotic", use_continuity=True)`` (scipy 1.16.3); the suite itself never depends on scipy.
"""

from __future__ import annotations

import numpy as np
import pytest

from pytest_dsbench.history import stats

NO_TIES = ([1.1, 2.2, 3.3, 4.4, 5.5, 6.6, 7.7, 8.8], [3.05, 4.05, 5.05, 6.05, 7.05, 8.05, 9.05, 10.05, 11.05])
TIES = ([1, 2, 2, 3, 3, 3, 4, 5], [2, 3, 3, 4, 4, 5, 5, 6, 7])
BINARY = ([1] * 18 + [0] * 2, [1] * 12 + [0] * 8)


@pytest.mark.parametrize(
    ("case", "alternative", "u", "p_value"),
    [
        (NO_TIES, "greater", 21.0, 0.9320833159158225),
        (NO_TIES, "less", 21.0, 0.08146824992232865),
        (NO_TIES, "two-sided", 21.0, 0.1629364998446573),
        (TIES, "greater", 17.0, 0.9722090215103386),
        (TIES, "less", 17.0, 0.03467522719090861),
        (TIES, "two-sided", 17.0, 0.06935045438181722),
        (BINARY, "greater", 260.0, 0.015964314044373852),
        (BINARY, "less", 260.0, 0.9854215454894614),
        (BINARY, "two-sided", 260.0, 0.031928628088747704),
    ],
)
def test_mann_whitney_u_matches_scipy_asymptotic(
    case: tuple[list[float], list[float]], alternative: str, u: float, p_value: float
) -> None:
    result = stats.mann_whitney_u(case[0], case[1], alternative)  # type: ignore[arg-type]
    assert result.u == pytest.approx(u)
    assert result.p_value == pytest.approx(p_value, rel=1e-9)


def test_mann_whitney_u_of_identical_constant_samples_is_not_significant() -> None:
    assert stats.mann_whitney_u([5.0] * 10, [5.0] * 10).p_value == 1.0


def test_mann_whitney_u_rejects_an_empty_sample() -> None:
    with pytest.raises(ValueError, match="at least one value"):
        stats.mann_whitney_u([], [1.0])


def test_average_ranks_give_ties_their_mean_rank() -> None:
    ranks, ties = stats.average_ranks(np.array([10.0, 20.0, 20.0, 30.0]))
    assert ranks.tolist() == [1.0, 2.5, 2.5, 4.0]
    assert sorted(ties.tolist()) == [1.0, 1.0, 2.0]


@pytest.mark.parametrize(
    ("metric", "name"),
    [
        ("tpot_ms_p99", "p99"),
        ("ttft_ms_p90", "p90"),
        ("tpot_ms_median", "median"),
        ("itl_ms_max", "max"),
        ("e2e_ms_std", "std"),
        ("tpot_ms_mean", "mean"),
        ("output_tok_s", "mean"),
        ("accuracy", "mean"),
    ],
)
def test_statistic_follows_the_metric_name(metric: str, name: str) -> None:
    assert stats.statistic_of(metric)[0] == name


def test_tail_statistics_are_judged_by_the_bootstrap() -> None:
    assert stats.is_tail_statistic("tpot_ms_p99")
    assert stats.is_tail_statistic("itl_ms_max")
    assert not stats.is_tail_statistic("tpot_ms_mean")
    assert not stats.is_tail_statistic("tpot_ms_median")
    assert not stats.is_tail_statistic("output_tok_s")


def test_bootstrap_finds_a_clear_tail_regression() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(40, 2, 400)
    new = np.concatenate([rng.normal(40, 2, 360), rng.normal(80, 5, 40)])
    result = stats.bootstrap_change(base, new, "tpot_ms_p99", higher_is_better=False, confidence=0.99, seed=3)
    assert result.lower_pct > 20
    assert result.p_value < 0.01


def test_bootstrap_sees_no_regression_between_two_draws_of_one_distribution() -> None:
    rng = np.random.default_rng(2)
    base, new = rng.normal(40, 2, 400), rng.normal(40, 2, 400)
    result = stats.bootstrap_change(base, new, "tpot_ms_p99", higher_is_better=False, confidence=0.99, seed=3)
    assert result.lower_pct < 0 < result.upper_pct


def test_bootstrap_signs_changes_so_that_positive_is_worse_for_throughput() -> None:
    base, new = [100.0 + i % 5 for i in range(50)], [80.0 + i % 5 for i in range(50)]
    result = stats.bootstrap_change(base, new, "output_tok_s", higher_is_better=True, confidence=0.99, seed=1)
    assert result.change_pct == pytest.approx(19.6, abs=0.1)
    assert result.lower_pct > 15


def test_bootstrap_is_reproducible_for_one_seed() -> None:
    base, new = list(range(1, 60)), list(range(3, 62))
    first = stats.bootstrap_change(base, new, "tpot_ms_p90", higher_is_better=False, confidence=0.95, seed=9)
    again = stats.bootstrap_change(base, new, "tpot_ms_p90", higher_is_better=False, confidence=0.95, seed=9)
    assert first == again


def test_bootstrap_rejects_a_confidence_outside_one_half_to_one() -> None:
    with pytest.raises(ValueError, match="confidence"):
        stats.bootstrap_change([1.0], [1.0], "tpot_ms_p99", higher_is_better=False, confidence=99)


def test_seed_depends_on_every_name() -> None:
    assert stats.seed_for("a", "b") == stats.seed_for("a", "b")
    assert stats.seed_for("a", "b") != stats.seed_for("ab", "")


@pytest.mark.parametrize(
    ("t", "dof", "sf"),
    [
        (2.776445, 4, 0.02500000269104578),
        (2.763769, 10, 0.010000007861666747),
        (0.0, 3, 0.5),
        (-1.5, 7, 0.911350756505015),
        (5.0, 2, 0.018874775675311862),
        (12.0, 5, 3.544746258580764e-05),
    ],
)
def test_student_t_survival_matches_scipy(t: float, dof: int, sf: float) -> None:
    assert stats.student_t_sf(t, dof) == pytest.approx(sf, rel=1e-9)


def test_run_to_run_flags_a_value_beyond_the_spread_of_earlier_runs() -> None:
    result = stats.run_to_run([100, 102, 98, 101, 99], 110, higher_is_better=False)
    assert result.runs == 5 and result.mean == 100.0
    assert result.noise_pct == pytest.approx(1.58, abs=0.01)
    assert result.p_value == pytest.approx(0.00223, abs=1e-5)


def test_run_to_run_respects_the_direction() -> None:
    assert stats.run_to_run([100, 102, 98, 101, 99], 90, higher_is_better=True).p_value < 0.01
    assert stats.run_to_run([100, 102, 98, 101, 99], 110, higher_is_better=True).p_value > 0.99


def test_run_to_run_of_identical_runs_flags_any_worsening() -> None:
    assert stats.run_to_run([5.0] * 5, 6.0, higher_is_better=False).p_value == 0.0
    assert stats.run_to_run([5.0] * 5, 5.0, higher_is_better=False).p_value == 1.0
