"""The seeds' methods without an engine: seed 003's output formats and the search (the engines' log lines:
test_engines_logformat.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_dsbench.load.datasets import DatasetSpec
from pytest_dsbench.load.records import RequestRecord
from pytest_dsbench.load.runner import LoadConfig, LoadRun
from pytest_dsbench.methods import ali, tencent
from pytest_dsbench.methods.logparse import DecodeSample
from pytest_dsbench.metrics import Summary


def test_ali_decode_json_is_seed_003s_two_dictionaries() -> None:
    samples = [
        DecodeSample(1, 140.0, "vllm", 0),
        DecodeSample(1, 143.34, "vllm", 1),
        DecodeSample(2, 215.565, "vllm", 2),
        DecodeSample(3, 235.79, "vllm", 3),
    ]
    table = ali.decode_table(samples, devices=1, order=[1, 2, 4])
    payload = ali.decode_json({1: 7.064, 2: 9.3749, 4: 13.57}, table)
    assert payload[0] == {"1": 7.06, "2": 9.37, "4": 13.57}
    assert list(payload[1]) == ["1", "2", "3"]  # probed sizes first, then the others as they appeared
    assert payload[1]["1"] == {
        "median": pytest.approx(141.67),
        "throughput_per_gpu": pytest.approx(141.67),
        "throughput_per_user": pytest.approx(141.67),
        "gen_througput_samples": 2,
    }
    assert payload[1]["2"]["throughput_per_user"] == pytest.approx(107.7825)
    assert isinstance(payload[1]["2"]["gen_througput_samples"], int)
    json.dumps(payload)


def test_ali_decode_divides_by_the_decode_accelerators() -> None:
    table = ali.decode_table([DecodeSample(4, 800.0, "sglang", 0)], devices=8)
    assert table[4]["throughput_per_gpu"] == pytest.approx(100.0) and table[4]["throughput_per_user"] == 200.0


def fake_run(**values: float) -> LoadRun:
    summary = Summary(values=dict(values), completed=128, duration_s=332.81)
    cfg = LoadConfig(base_url="http://x", model="m", dataset=DatasetSpec("random", 128, 3500, 1200, 1.0))
    return LoadRun(config=cfg, records=[RequestRecord(0, 1, 1)], summary=summary, client=None)


def test_tencent_final_metrics_match_the_seeds_line() -> None:
    run = fake_run(
        tpot_ms_mean=35.98,
        ttft_ms_mean=144639.27,
        input_tok_s=1346.12,
        output_tok_s=461.53,
        total_tok_s=1807.65,
        request_throughput_req_s=128 / 332.81,
    )
    assert tencent.final_metrics_line(run) == (
        "final_metrics: [{'tpot (ms)': '35.98', 'ttft (ms)': '144639.27', "
        "'input_throughput (tok/s)': '1346.12', 'output_throughput (tok/s)': '461.53', "
        "'total_throughput (tok/s)': '1807.65', 'QPM (req/min)': 22.8}]"
    )


def threshold_probe(limit_c: int, calls: list[int], now: list[float] | None = None) -> Any:
    """A fake load point: TPOT grows with concurrency and passes up to ``limit_c``; each takes 10 s."""

    def probe(c: int, seconds_left: float) -> tencent.Probe:
        calls.append(c)
        if now is not None:
            now[0] += 10.0
        return tencent.Probe(c, 10.0 + 5.0 * c, 2 * c, 0.0, c <= limit_c)

    return probe


def test_search_halves_from_the_top_then_bisects_to_the_largest_passing_concurrency() -> None:
    calls: list[int] = []
    result = tencent.search(threshold_probe(37, calls), 1, 128, max_probes=20)
    assert result.best == 37 and result.stopped == "converged"
    assert calls[:3] == [128, 64, 32] and len(calls) <= 3 + 5


def test_search_stops_after_one_probe_when_the_top_passes() -> None:
    calls: list[int] = []
    result = tencent.search(threshold_probe(500, calls), 1, 64)
    assert result.best == 64 and calls == [64]


def test_search_reports_none_when_even_the_lowest_fails() -> None:
    calls: list[int] = []
    result = tencent.search(threshold_probe(0, calls), 1, 64, max_probes=20)
    assert result.best is None and result.stopped == "the lowest concurrency fails"
    assert calls == [64, 32, 16, 8, 4, 2, 1]


def test_search_is_bounded_by_probes_and_time() -> None:
    calls: list[int] = []
    bounded = tencent.search(threshold_probe(37, calls), 1, 128, max_probes=4)
    assert len(calls) == 4 and bounded.stopped == "max_probes (4)" and bounded.best == 32
    now = [0.0]
    timed = tencent.search(threshold_probe(37, [], now), 1, 128, time_budget_s=25, clock=lambda: now[0])
    assert timed.stopped == "time budget (25 s)" and len(timed.probes) == 3 and timed.best == 32


def test_each_probe_is_told_the_time_left() -> None:
    left: list[float] = []
    now = [0.0]

    def probe(c: int, seconds_left: float) -> tencent.Probe:
        left.append(seconds_left)
        now[0] += 40.0
        return tencent.Probe(c, 99.0, 16, 0.0, False)

    tencent.search(probe, 1, 8, time_budget_s=100, clock=lambda: now[0])
    assert left == [100.0, 60.0, 20.0]


def test_probes_carry_enough_samples_for_the_statistic() -> None:
    assert tencent.samples_for("mean", 4) == 16 and tencent.samples_for("mean", 64) == 128
    assert tencent.samples_for("p99", 8) == 200
