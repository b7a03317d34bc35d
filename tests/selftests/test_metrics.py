"""Metric definitions: every formula matches sglang.bench_serving's (bench_tools.md (c)) on hand-made records."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pytest_dsbench import metrics
from pytest_dsbench.gate import Gate
from pytest_dsbench.load.records import RequestRecord
from pytest_dsbench.metrics import GoodputSlo, summarize
from pytest_dsbench.results import RunResults


def rec(
    index: int,
    start: float,
    chunks: list[float],
    end: float,
    *,
    max_tokens: int = 4,
    prompt_len: int = 10,
    usage: int | None = None,
    success: bool = True,
    answer: float | None = None,
    retok: int | None = None,
) -> RequestRecord:
    return RequestRecord(
        index=index,
        prompt_len=prompt_len,
        max_tokens=max_tokens,
        start_s=start,
        chunk_s=chunks,
        end_s=end,
        success=success,
        usage_completion_tokens=usage,
        answer_s=answer,
        retok_len=retok,
        error="" if success else "boom",
    )


RECORDS = [
    rec(0, 0.0, [0.10, 0.12, 0.15, 0.19], 0.20, retok=4),
    rec(1, 0.5, [0.70, 0.75, 0.80], 0.82, max_tokens=3, usage=3, retok=3),
    rec(2, 1.0, [1.30], 1.31, max_tokens=1, usage=1, retok=1),
    rec(3, 1.2, [], 1.5, success=False),
]


def test_ttft_is_time_to_the_first_text_chunk_of_successful_requests() -> None:
    s = summarize(RECORDS, 2.0)
    assert s.samples["ttft"] == pytest.approx([100.0, 200.0, 300.0])
    assert s["ttft_ms_mean"] == pytest.approx(200.0)
    assert s["ttft_ms_p99"] == pytest.approx(np.percentile([100, 200, 300], 99))


def test_tpot_excludes_the_first_token_and_skips_single_token_requests() -> None:
    s = summarize(RECORDS, 2.0)
    # (e2e - ttft) / (output_len - 1): request 0 (0.20-0.10)/3, request 1 (0.32-0.20)/2; request 2 has 1 token
    assert s.samples["tpot"] == pytest.approx([100 / 3, 60.0])


def test_itl_is_one_sample_per_chunk_gap_pooled_over_requests() -> None:
    s = summarize(RECORDS, 2.0)
    assert s.samples["itl"] == pytest.approx([20.0, 30.0, 40.0, 50.0, 50.0])
    assert s["itl_ms_max"] == pytest.approx(50.0)


def test_e2e_runs_to_the_last_line_received() -> None:
    s = summarize(RECORDS, 2.0)
    assert s.samples["e2e"] == pytest.approx([200.0, 320.0, 310.0])


def test_output_length_is_server_usage_else_the_requested_length() -> None:
    assert metrics.output_len(RECORDS[0]) == 4  # no usage streamed: requested max_tokens (sglang's rule)
    assert metrics.output_len(rec(9, 0, [0.1], 0.2, max_tokens=8, usage=5)) == 5
    assert metrics.output_len(RECORDS[3]) == 0  # failed requests contribute nothing


def test_throughputs_divide_totals_by_the_duration() -> None:
    s = summarize(RECORDS, 2.0, devices=4)
    assert s.total_input == 30 and s.total_output == 8 and s.total_output_retokenized == 8
    assert s["output_tok_s"] == pytest.approx(4.0)
    assert s["input_tok_s"] == pytest.approx(15.0)
    assert s["total_tok_s"] == pytest.approx(19.0)
    assert s["request_throughput_req_s"] == pytest.approx(1.5)
    assert s["qpm"] == pytest.approx(90.0)
    assert s["total_tok_s_per_device"] == pytest.approx(19.0 / 4)
    assert s["input_tok_s_per_device"] == pytest.approx(15.0 / 4)


def test_concurrency_is_littles_law_over_successful_requests() -> None:
    assert summarize(RECORDS, 2.0)["concurrency_mean"] == pytest.approx((0.2 + 0.32 + 0.31) / 2.0)


def test_per_user_throughput_is_inferencex_interactivity() -> None:
    s = summarize(RECORDS, 2.0)
    assert s["output_tok_s_per_user"] == pytest.approx(1000.0 / s["tpot_ms_mean"])


def test_failed_requests_count_in_error_rate_but_not_in_latencies() -> None:
    s = summarize(RECORDS, 2.0)
    assert s.completed == 3 and s.failed == 1
    assert s["error_rate"] == pytest.approx(0.25)
    assert len(s.samples["e2e"]) == 3


def test_peaks_use_one_second_bins_like_sglang() -> None:
    s = summarize(RECORDS, 2.0)
    assert s["peak_output_tok_s"] == 7  # 7 chunk events in second 0, one in second 1
    assert s["peak_concurrent_requests"] == 2  # requests 0 and 1 in second 0; 1 and 2 cross into second 1


def test_empty_statistics_are_zero() -> None:
    s = summarize([rec(0, 0, [], 1.0, success=False)], 1.0)
    assert s["ttft_ms_mean"] == 0.0 and s["tpot_ms_p99"] == 0.0 and s["output_tok_s_per_user"] == 0.0


def test_time_to_first_answer_token_is_kept_apart_from_ttft() -> None:
    records = [rec(0, 0.0, [0.1, 0.2, 0.3], 0.35, answer=0.3), rec(1, 0.0, [0.2, 0.4], 0.45)]
    s = summarize(records, 1.0)
    assert s.samples["ttft"] == pytest.approx([100.0, 200.0])
    assert s.samples["ttfat"] == pytest.approx([300.0])  # the request that never answered has no TTFAT


def test_goodput_needs_every_per_request_limit_and_treats_single_tokens_as_zero_tpot() -> None:
    slo = GoodputSlo(ttft_ms=250.0, tpot_ms=40.0)
    assert slo.good(RECORDS[0])  # ttft 100, tpot 33.3
    assert not slo.good(RECORDS[1])  # tpot 60
    assert not slo.good(RECORDS[2])  # ttft 300
    assert slo.good(rec(5, 0.0, [0.2], 0.21, max_tokens=1))  # one token: tpot := 0
    assert not slo.good(RECORDS[3])  # failed
    s = summarize(RECORDS, 2.0, goodput=slo)
    assert s["goodput_req_s"] == pytest.approx(0.5) and s["goodput_fraction"] == pytest.approx(0.25)


def test_goodput_is_absent_without_limits() -> None:
    assert "goodput_req_s" not in summarize(RECORDS, 2.0).values


def test_usage_that_differs_from_the_request_is_counted() -> None:
    records = [
        rec(0, 0, [0.1, 0.2], 0.3, max_tokens=2, usage=2),
        rec(1, 0, [0.1, 0.2], 0.3, max_tokens=3, usage=2),
    ]
    assert summarize(records, 1.0)["output_len_mismatch_fraction"] == pytest.approx(0.5)


def test_statistics_follow_numpy_linear_percentiles_and_population_std() -> None:
    values = [1.0, 2.0, 3.0, 10.0]
    assert metrics.stat(values, "p90") == pytest.approx(np.percentile(values, 90))
    assert metrics.stat(values, "std") == pytest.approx(np.std(values))
    assert metrics.stat([], "p99") == 0.0
    with pytest.raises(ValueError, match="unknown statistic"):
        metrics.stat(values, "avg")


def test_every_metric_names_its_unit_and_direction() -> None:
    for metric in metrics.METRICS.values():
        assert metric.unit and metric.definition
        assert metric.direction in ("lower_is_better", "higher_is_better")
    s = summarize(RECORDS, 2.0, goodput=GoodputSlo(ttft_ms=1.0))
    for name in s.values:
        assert name in metrics.METRICS, f"{name} is computed but not defined"


def test_change_is_positive_when_worse_in_either_direction() -> None:
    assert metrics.get("tpot_ms_mean").change_pct(110, 100) == pytest.approx(10.0)
    assert metrics.get("output_tok_s").change_pct(90, 100) == pytest.approx(10.0)
    assert math.isinf(metrics.get("output_tok_s").change_pct(1, 0))


def test_unknown_metric_suggests_close_names_and_lists_the_declared_ones() -> None:
    with pytest.raises(metrics.UnknownMetric, match=r"Did you mean: tpot_ms_mean.*declared one: ttft_ms_mean, "):
        metrics.get("tpot_ms_meen")


def test_recording_an_undeclared_metric_fails_naming_the_declared_ones() -> None:
    gate = Gate(test_id="t", results=RunResults())
    with pytest.raises(KeyError, match=r"unknown metric 'tok_s'\..*output_tok_s"):
        gate.record("tok_s", 1.0)


def test_a_limit_is_named_by_the_metric_and_its_direction() -> None:
    assert metrics.get("tpot_ms_p99").limit_key == "tpot_ms_p99_max"
    assert metrics.get("tpot_ms_p99").comparison == "<="
    assert metrics.get("output_tok_s").limit_key == "output_tok_s_min"
    assert metrics.get("output_tok_s").comparison == ">="


def test_a_declaration_measures_value_samples_and_sample_count_together() -> None:
    s = summarize(RECORDS, 2.0)
    tpot = metrics.get("tpot_ms_mean").measure(s)
    assert tpot.value == s["tpot_ms_mean"] and tpot.samples == s.samples["tpot"] and tpot.sample_count == 2
    errors = metrics.get("error_rate").measure(s)
    assert errors.samples == [] and errors.sample_count == 4  # every request sent stands behind the error rate
    output = metrics.get("output_tok_s").measure(s)
    assert output.sample_count == 3  # the completed requests, not the 1-s windows its samples are
    assert metrics.get("qpm").measure(s, value=1.5).value == 1.5


def test_every_latency_statistic_is_declared_with_its_requests_as_samples() -> None:
    s = summarize(RECORDS, 2.0)
    for latency in ("ttft", "ttfat", "tpot", "itl", "e2e"):
        for stat in metrics.STATS:
            declared = metrics.get(f"{latency}_ms_{stat}")
            assert isinstance(declared, metrics.LatencyMetric)
            assert declared.samples(s) == s.samples[latency]


def test_throughput_samples_are_output_tokens_per_full_one_second_window() -> None:
    # request 0 streams 4 tokens in window 0; request 1 streams 6 tokens as 3 chunks of 2 (MTP), two in window 1
    # and one in window 2, which the run's end (2.5 s) leaves partial and so dropped
    records = [
        rec(0, 0.0, [0.1, 0.2, 0.3, 0.4], 0.5, usage=4),
        rec(1, 0.5, [1.2, 1.5, 2.2], 2.5, max_tokens=6, usage=6),
    ]
    assert metrics.window_output_tok_s(records) == pytest.approx([4.0, 4.0])


def test_throughput_metrics_scale_the_window_samples_by_their_ratio_to_output_throughput() -> None:
    records = [rec(i, 0.0, [0.5 + i, 1.0 + i, 1.5 + i, 2.0 + i], 2.5 + i) for i in range(3)]
    s = summarize(records, 4.5)
    windows = metrics.get("output_tok_s").samples(s)
    assert len(windows) == 4
    total = metrics.get("total_tok_s").samples(s)
    ratio = s["total_tok_s"] / s["output_tok_s"]
    assert total == pytest.approx([w * ratio for w in windows])
    assert metrics.get("accuracy").samples(s) == []  # measured elsewhere: its samples come with it
