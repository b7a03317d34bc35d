"""Minimum evidence and internal consistency without an engine: intervals, the token timeline behind ali decode,
and the rules that make a run INVALID (synthetic timelines; the methods end to end: test_methods_suite.py)."""

from __future__ import annotations

import pytest

from pytest_dsbench import evidence
from pytest_dsbench.load.datasets import DatasetSpec
from pytest_dsbench.load.records import RequestRecord
from pytest_dsbench.load.runner import LoadConfig, LoadRun
from pytest_dsbench.load.timeline import decode_by_batch_size
from pytest_dsbench.methods import ali, ali_prefill
from pytest_dsbench.metrics import Summary, summarize
from pytest_dsbench.thresholds import Evidence
from pytest_dsbench.workloads.ali import AliPrefillConfig


def test_t_interval_of_repeats_uses_students_t() -> None:
    found = evidence.t_interval([10.0, 12.0, 11.0, 13.0, 9.0])
    assert found is not None and found.value == 11.0 and found.n == 5
    assert found.high - found.value == pytest.approx(2.776 * (2.5**0.5) / 5**0.5, rel=1e-3)
    assert evidence.t_interval([5.0]) is None  # one repeat has no interval


def test_bootstrap_interval_is_reproducible_and_brackets_the_statistic() -> None:
    values = [float(v % 17) for v in range(200)]
    first = evidence.bootstrap_interval(values, "p90")
    assert first is not None and first == evidence.bootstrap_interval(values, "p90")
    assert first.low <= first.value <= first.high and first.n == 200


def test_a_percentile_needs_enough_samples_above_it() -> None:
    assert evidence.samples_needed("p99", 8, 1) == 100 and evidence.samples_needed("p90", 8, 1) == 10
    assert evidence.samples_needed("mean", 8, 1) == 8 and evidence.samples_needed("p99", 8, 0) == 8


def stream(start_s: float, first_chunk_s: float, tokens: int, gap_s: float, tail_s: float = 0.0) -> RequestRecord:
    """A streamed request: first token at ``first_chunk_s``, then one token every ``gap_s``; the stream ends
    ``tail_s`` after its last token."""
    chunks = [first_chunk_s + i * gap_s for i in range(tokens)]
    return RequestRecord(
        index=0, prompt_len=8, max_tokens=tokens, start_s=start_s, dispatched_s=start_s, chunk_s=chunks,
        end_s=chunks[-1] + tail_s, success=True, usage_completion_tokens=tokens,
    )


def test_timeline_counts_tokens_only_where_exactly_b_requests_decode() -> None:
    a = stream(0.0, 0.0, 101, 0.01)  # decodes 0 .. 1.0 s at 100 tok/s
    b = stream(0.4, 0.5, 101, 0.01)  # decodes 0.5 .. 1.5 s at 100 tok/s
    by_size = decode_by_batch_size([[a, b]])
    assert set(by_size) == {1, 2}
    assert by_size[1].decode_s == pytest.approx(1.0) and by_size[1].tok_s == pytest.approx(100.0, rel=0.03)
    assert by_size[2].decode_s == pytest.approx(0.5) and by_size[2].tok_s == pytest.approx(200.0, rel=0.03)
    assert len(by_size[2].slice_tok_s) == 3  # 0.5 s of decode at B = 2 in slices of 16 steps (0.16 s)


def load_run(records: list[RequestRecord], duration_s: float | None = None) -> LoadRun:
    summary = summarize(records, duration_s or max(r.end_s for r in records))
    cfg = LoadConfig(base_url="http://x", model="m", dataset=DatasetSpec("random", len(records), 8, 32, 1.0))
    return LoadRun(config=cfg, records=records, summary=summary, client=None)


def decode_result(records: list[RequestRecord], size: int) -> ali.AliDecodeResult:
    """The ali decode result of one probe at ``size`` (what run_decode builds from a real one)."""
    run = load_run(records)
    timeline = decode_by_batch_size([records])
    table = ali.client_table(timeline, devices=1, order=[size])
    return ali.AliDecodeResult(
        tpot_ms={size: run.summary["tpot_ms_mean"]}, table=table, samples=[], runs={size: run}, log_paths=[],
        timeline=timeline, probe_per_user_tok_s=ali._probe_per_user_tok_s({size: run}),
    )


STRICT = Evidence(min_duration_s=0.5, min_samples=4, tail_samples=1, consistency_tolerance_pct=25.0)


def wave(size: int, tokens: int = 100, gap_s: float = 0.01, tail_s: float = 0.0) -> list[RequestRecord]:
    """``size`` requests streaming side by side (one decode batch)."""
    return [stream(0.0, 0.02, tokens, gap_s, tail_s) for _ in range(size)]


def test_ali_decode_with_enough_consistent_evidence_is_valid() -> None:
    result = decode_result(wave(4), 4)
    assert ali.decode_problems(result, [4], STRICT) == []
    row = result.table[4]
    assert row["throughput_per_user"] == pytest.approx(1000.0 / result.tpot_ms[4], rel=0.05)
    assert row["throughput_per_gpu"] == pytest.approx(400.0, rel=0.05) and row["gen_througput_samples"] == 6


def test_ali_decode_per_user_rate_contradicting_tpot_is_invalid() -> None:
    # a server that holds every stream open 1 s after its last token: TPOT says ~20 ms, the tokens came every 10
    result = decode_result(wave(4, tail_s=1.0), 4)
    problems = ali.decode_problems(result, [4], STRICT)
    assert len(problems) == 1
    expected = "batch size 4: per-user decode 100 tok/s from the probe's token timeline contradicts 1000 / mean TPOT"
    assert expected in problems[0]
    assert "consistency_tolerance_pct 25 %" in problems[0]


def test_ali_decode_judges_tpot_against_the_probes_own_rate_not_the_pooled_one() -> None:
    # the pooled figure at B = 1 also holds the tails of larger probes, which decode at another speed
    result = decode_result(wave(1), 1)
    result.table[1] = {**result.table[1], "throughput_per_user": result.table[1]["throughput_per_user"] / 3}
    assert ali.decode_problems(result, [1], STRICT) == []


def test_ali_decode_shorter_than_the_minimum_is_invalid_naming_the_fix() -> None:
    result = decode_result(wave(2, tokens=20), 2)  # 0.19 s of decode at B = 2
    (problem,) = ali.decode_problems(result, [2], STRICT)
    assert "batch size 2: it lasted 0.19 s < [evidence] min_duration_s 0.5 s" in problem
    assert "raise num_prompts" in problem


def test_ali_decode_probed_size_never_reached_is_invalid() -> None:
    (problem,) = ali.decode_problems(decode_result(wave(2), 2), [2, 8], STRICT)
    assert problem.startswith("batch size 8: no request decoded at this batch size")


def prefill(length: int, rates: list[float], duration_s: float = 0.5, requests: int = 4) -> ali_prefill.PrefillLength:
    runs = []
    for _ in rates:
        run = load_run([RequestRecord(0, length, 1)], duration_s)
        run.summary = Summary(values={}, completed=requests, duration_s=duration_s)
        runs.append(run)
    return ali_prefill.PrefillLength(length, runs, rates, evidence.t_interval(rates), "test")


PREFILL = AliPrefillConfig(method="ali_prefill", output_len=1, num_prompts=4, target_half_width_rel=0.1)


def test_the_issues_one_short_prefill_run_per_length_is_invalid() -> None:
    measured = {256: prefill(256, [1748.0], duration_s=0.06), 512: prefill(512, [24661.0], duration_s=0.08)}
    problems = ali_prefill.prefill_problems(measured, Evidence(), PREFILL)
    assert len(problems) == 2
    assert problems[0].startswith("input_len 256: 1 repeat(s) of 4 requests, it lasted 0.06 s < [evidence] "
                                  "min_duration_s 1 s; it has 4 requests < the 8 it needs")
    assert "raise num_prompts, max_repeats or repeat_budget_s" in problems[0]


def test_prefill_interval_still_wide_at_its_limit_stands_with_a_note() -> None:
    measured = {256: prefill(256, [1000.0, 3000.0, 2000.0], duration_s=1.0)}
    assert ali_prefill.prefill_problems(measured, Evidence(), PREFILL) == []
    (note,) = ali_prefill.wide_intervals(measured, PREFILL)
    assert "is +-124.2% of the mean after 3 repeats of 4 requests, wider than the target +-10.0%" in note


def test_prefill_of_one_repeat_has_no_interval_and_is_invalid() -> None:
    measured = {256: prefill(256, [2000.0], duration_s=2.0, requests=16)}
    (problem,) = ali_prefill.prefill_problems(measured, Evidence(), PREFILL)
    assert "no interval (one repeat)" in problem


def test_prefill_rates_no_batch_cost_explains_are_invalid() -> None:
    # tight repeats, but doubling the prompt cannot make a batch 14x faster per token
    measured = {256: prefill(256, [1748.0, 1750.0, 1746.0], 1.0), 512: prefill(512, [24661.0, 24600.0, 24700.0], 1.0)}
    (problem,) = ali_prefill.prefill_problems(measured, Evidence(), PREFILL)
    assert problem.startswith("prefill rates contradict each other: 1748 tok/s at 256 tokens and 2.465e+04 tok/s")
    assert "the ratio must lie in [0.5, 2]" in problem


def test_consistent_tight_prefill_rates_are_valid() -> None:
    measured = {256: prefill(256, [9000.0, 9100.0, 8950.0], 1.0), 512: prefill(512, [12000.0, 12100.0, 11900.0], 1.0)}
    assert ali_prefill.prefill_problems(measured, Evidence(), PREFILL) == []


def test_slices_span_enough_decode_steps_when_steps_are_slow() -> None:
    # an 85-ms step (a busy CPU): 0.1-s slices would mostly hold no token and their median would be 0
    slow = decode_by_batch_size([[stream(0.0, 0.1, 200, 0.085)]])[1]
    assert 16 * 0.085 <= slow.slice_s < 17 * 0.085 and len(slow.slice_tok_s) == 12  # equal slices, 16+ steps
    import statistics

    assert statistics.median(slow.slice_tok_s) == pytest.approx(1 / 0.085, rel=0.07)
