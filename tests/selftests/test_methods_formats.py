"""The seeds' methods without an engine: log lines of all three engines, seed 003's output formats, the search."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_dsbench.load.datasets import DatasetSpec
from pytest_dsbench.load.records import RequestRecord
from pytest_dsbench.load.runner import LoadConfig, LoadRun
from pytest_dsbench.methods import ali, tencent
from pytest_dsbench.methods.logparse import DecodeSample, LogCursor, parse_line, parse_lines
from pytest_dsbench.metrics import Summary
from pytest_dsbench.testing.fake_decode_log import decode_line

# Lines as the engines print them (formats read from vllm 0.32 loggers.py, sglang scheduler, lmdeploy
# loggers.py).
VLLM = (
    "(APIServer pid=4242) INFO 11-23 21:50:01 [loggers.py:284] Engine 000: "
    "Avg prompt throughput: 0.0 tokens/s, Avg generation throughput: 456.7 tokens/s, Running: 8 reqs, "
    "Waiting: 0 reqs, CPU KV cache usage: 1.2%, "
    "Prefix cache hit rate: 0.0%"
)
VLLM_ITERATION = (
    "(EngineCore_DP0 pid=77) INFO 11-23 21:50:01 [loggers.py:198] Engine 000: Iteration(412): 0 context "
    "requests, 0 context tokens, 8 generation requests, 8 generation tokens, iteration elapsed time: "
    "16.00 ms, CPU KV cache usage: 1.2%"
)
VLLM_PREFILL_ITERATION = VLLM_ITERATION.replace(
    "0 context requests, 0 context tokens", "2 context requests, 700 context tokens"
)
SGLANG = (
    "[2026-03-14 04:59:11 TP0] Decode batch, #running-req: 20, #token: 2326796, token usage: 0.14, "
    "cuda graph: True, gen throughput (token/s): 1174.06, #queue-req: 6, "
)
SGLANG_OLD = (
    "[2025-11-06 12:11:03] Decode batch. #running-req: 1, #token: 206, token usage: 0.00, "
    "cuda graph: True, gen throughput (token/s): 656.23, #queue-req: 0"
)
LMDEPLOY = (
    "[2026-01-01 10:00:00 DP0] Avg prompt throughput: 0.0 tokens/s, "
    "Avg generation throughput: 123.4 tokens/s, Finished: 0 reqs, Unfinished: 4 reqs, Running: 4 reqs, "
    "Waiting: 0 reqs, GPU KV cache usage: 3.1%, "
    "Prefix cache hit rate: 0.0%"
)
# sglang 0.5.17 scheduler_components/metrics_reporter.py with SGLANG_LOG_FORWARD_ITERS: the forward iteration
# in brackets after "Decode batch"
SGLANG_ITERS = (
    "[2026-12-07 11:40:02 TP0] Decode batch [412], #running-req: 16, #token: 19712, token usage: 0.01, "
    "cuda graph: True, gen throughput (token/s): 2871.40, #queue-req: 0"
)
# lmdeploy 0.18.0 metrics/loggers.py LoggingStatLogger.log
LMDEPLOY_018 = (
    "[2026-12-07 11:40:02 DP0] Avg thr (in/out): 1638.4 / 4096.2 tokens/s, "
    "Server (succeeded/failed/routed/waiting): 120 / 0 / 64 / 0, Engine (running/waiting): 64 / 0, "
    "KV cache: 12.5%, "
)
LMDEPLOY_OLD = (
    "DP: 0, Avg prompt throughput: 10.0 tokens/s, Avg generation throughput: 99.5 tokens/s, "
    "Running: 3 reqs, Waiting: 1 reqs, GPU KV cache usage: 2.0%, "
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (VLLM, (8, 456.7, "vllm")),
        (VLLM_ITERATION, (8, 500.0, "vllm-iteration")),
        (SGLANG, (20, 1174.06, "sglang")),
        (SGLANG_OLD, (1, 656.23, "sglang")),
        (LMDEPLOY, (4, 123.4, "lmdeploy")),
        (LMDEPLOY_OLD, (3, 99.5, "lmdeploy")),
        (SGLANG_ITERS, (16, 2871.40, "sglang")),
        (LMDEPLOY_018, (64, 4096.2, "lmdeploy")),
    ],
    ids=["vllm", "vllm-iteration", "sglang", "sglang-old", "lmdeploy", "lmdeploy-old", "sglang-0.5.17-iters",
         "lmdeploy-0.18"],
)
def test_decode_lines_of_every_engine_give_running_size_and_throughput(
    line: str, expected: tuple[int, float, str]
) -> None:
    running, tok_s, source = parse_line(line)  # type: ignore[misc]
    assert (running, source) == expected[::2]
    assert tok_s == pytest.approx(expected[1])


def test_prefill_steps_idle_lines_and_other_lines_are_not_decode_samples() -> None:
    idle = VLLM.replace("456.7", "0.0").replace("Running: 8", "Running: 0")
    lines = ["INFO: 127.0.0.1 - POST /v1/completions 200", idle, VLLM_PREFILL_ITERATION, SGLANG]
    assert [(s.running, s.line) for s in parse_lines(lines)] == [(20, 3)]


def test_lmdeploy_018_idle_line_is_not_a_sample_and_needs_the_lmdeploy_format() -> None:
    idle = LMDEPLOY_018.replace("4096.2", "0.0").replace("running/waiting): 64", "running/waiting): 0")
    assert parse_lines([idle, LMDEPLOY_018], "lmdeploy") == [DecodeSample(64, 4096.2, "lmdeploy", 1)]
    assert parse_lines([LMDEPLOY_018], "sglang") == []


def test_an_explicit_format_ignores_the_other_engines_lines() -> None:
    assert parse_lines([VLLM, SGLANG], "sglang") == [DecodeSample(20, 1174.06, "sglang", 1)]


@pytest.mark.parametrize("engine", ["vllm", "sglang", "lmdeploy"])
def test_the_fake_engines_decode_lines_parse_as_that_engine(engine: str) -> None:
    parsed = parse_line(decode_line(engine, 5, 321.0))
    assert parsed is not None and parsed[:2] == (5, pytest.approx(321.0))


def test_log_cursor_reads_only_what_was_written_after_it(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    log.write_text("old line\n")
    cursor = LogCursor([log, tmp_path / "missing.log"])
    with log.open("a") as out:
        out.write(SGLANG + "\n")
    assert cursor.new_lines() == [SGLANG]
    assert cursor.new_lines() == []


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
