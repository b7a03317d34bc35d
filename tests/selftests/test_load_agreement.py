"""Round-by-round agreement with a reference tool: a miss in the same direction in every round is a
disagreement; a miss whose rounds point both ways is inconclusive (noise), never a pass."""

from __future__ import annotations

import pytest

from pytest_dsbench.load.agreement import compare_rounds, inconclusive_only


def rounds(**per_metric: list[float]) -> list[dict[str, float]]:
    count = len(next(iter(per_metric.values())))
    return [{m: v[i] for m, v in per_metric.items()} for i in range(count)]


def test_rounds_within_the_limit_agree() -> None:
    (ttft,) = compare_rounds(rounds(ttft=[100, 101, 99]), rounds(ttft=[101, 100, 100]), ["ttft"], 3.0)
    assert ttft.agrees and not ttft.inconclusive and ttft.diff_pct == pytest.approx(1.0)


def test_a_miss_in_the_same_direction_every_round_is_a_disagreement() -> None:
    agreements = compare_rounds(rounds(tpot=[20, 20.1, 20]), rounds(tpot=[25, 25, 25]), ["tpot"], 3.0)
    assert not agreements[0].agrees and agreements[0].systematic and not agreements[0].inconclusive
    assert not inconclusive_only(agreements)


def test_a_consistent_bias_is_a_disagreement_however_noisy_the_rounds() -> None:
    (ttft,) = compare_rounds(rounds(ttft=[80, 130, 100]), rounds(ttft=[70, 120, 90]), ["ttft"], 3.0)
    assert ttft.systematic and not ttft.inconclusive


def test_a_miss_whose_rounds_point_both_ways_is_inconclusive() -> None:
    agreements = compare_rounds(rounds(ttft=[80, 120, 100]), rounds(ttft=[110, 90, 120]), ["ttft"], 3.0)
    assert agreements[0].round_diffs_pct[1] > 0 > agreements[0].round_diffs_pct[0]
    assert agreements[0].inconclusive and inconclusive_only(agreements)


def test_one_disagreement_makes_the_whole_comparison_a_failure_whatever_else_is_noisy() -> None:
    ours = rounds(ttft=[80, 120, 100], tpot=[20, 20, 20])
    theirs = rounds(ttft=[110, 90, 120], tpot=[25, 25, 25])
    assert not inconclusive_only(compare_rounds(ours, theirs, ["ttft", "tpot"], 3.0))


def test_all_metrics_agreeing_is_not_inconclusive() -> None:
    assert not inconclusive_only(compare_rounds(rounds(x=[1.0, 1.0]), rounds(x=[1.0, 1.0]), ["x"], 3.0))


def test_a_zero_reference_value_never_agrees() -> None:
    (x,) = compare_rounds(rounds(x=[1.0]), rounds(x=[0.0]), ["x"], 3.0)
    assert not x.agrees


def test_unpaired_rounds_are_refused() -> None:
    with pytest.raises(ValueError, match=r"need paired rounds, got 2 of ours and 1"):
        compare_rounds(rounds(x=[1.0, 1.0]), rounds(x=[1.0]), ["x"], 3.0)
