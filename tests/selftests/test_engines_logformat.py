"""Each engine's decode-throughput log lines (``engines/<name>/logformat.py``) and the reader the seed methods use
(``methods/logparse.py``): formats read from vllm 0.32 loggers.py, the sglang scheduler and lmdeploy loggers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_dsbench.engines.lmdeploy import logformat as lmdeploy_log
from pytest_dsbench.engines.sglang import logformat as sglang_log
from pytest_dsbench.engines.vllm import logformat as vllm_log
from pytest_dsbench.methods.logparse import DecodeSample, LogCursor, parse_line, parse_lines
from pytest_dsbench.testing.fake_decode_log import decode_line

# Lines as the engines print them.
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


@pytest.mark.parametrize(
    ("engine", "module", "lines"),
    [
        ("vllm", vllm_log, [VLLM, VLLM_ITERATION]),
        ("sglang", sglang_log, [SGLANG, SGLANG_OLD]),
        ("lmdeploy", lmdeploy_log, [LMDEPLOY, LMDEPLOY_OLD]),
    ],
)
def test_each_engines_own_format_reads_its_lines_as_the_reader_does(
    engine: str, module: object, lines: list[str]
) -> None:
    for line in lines:
        assert module.parse_decode_line(line) == parse_line(line) == parse_line(line, engine)  # type: ignore[attr-defined]


def test_an_engines_format_ignores_the_other_engines_lines() -> None:
    assert sglang_log.parse_decode_line(VLLM) is None
    assert vllm_log.parse_decode_line(SGLANG) is None
    assert lmdeploy_log.parse_decode_line(VLLM_ITERATION) is None, "iteration details are vLLM's alone"


# Excerpts of the engines' own logs from the H100 runs of 2026-12-07 (README, "SGLang 0.5.17 ran" and "LMDeploy
# 0.18.0 ran"): the lines the seed methods read, among the access-log lines written between them.
CAPTURED = Path(__file__).resolve().parents[2] / "fixtures" / "logs"


@pytest.mark.parametrize(
    ("log", "engine", "marker", "decode_lines"),
    [
        ("sglang-0.5.17-h100.log", "sglang", "Decode batch", 19),
        ("lmdeploy-0.18.0-h100.log", "lmdeploy", "Avg thr", 3),
    ],
)
def test_every_decode_line_an_engine_wrote_on_the_h100_is_read_and_no_other_line_is(
    log: str, engine: str, marker: str, decode_lines: int
) -> None:
    lines = (CAPTURED / log).read_text().splitlines()
    parsed = {n: parse_line(line) for n, line in enumerate(lines)}
    read = {n: line for n, line in parsed.items() if line is not None}
    assert sorted(read) == [n for n, line in enumerate(lines) if marker in line]
    assert len(read) == decode_lines and {parsed[2] for parsed in read.values()} == {engine}  # type: ignore[index]
    assert all(parse_line(lines[n], engine) == parsed for n, parsed in read.items())  # type: ignore[arg-type]


def test_the_ali_cross_check_groups_sglangs_real_decode_lines_by_running_batch_size() -> None:
    from pytest_dsbench.methods.ali import SAMPLES_KEY, decode_table

    lines = (CAPTURED / "sglang-0.5.17-h100.log").read_text().splitlines()
    table = decode_table(parse_lines(lines, "sglang"), devices=1)
    assert sorted(table) == [1, 64]
    assert table[64]["throughput_per_user"] == pytest.approx(table[64]["median"] / 64)
    assert sum(int(row[SAMPLES_KEY]) for row in table.values()) == 19
