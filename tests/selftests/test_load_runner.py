"""The load generator end to end against fake servers in their own processes (no GIL shared with the client).

Measured TTFT and ITL equal the fake's configured ones within tolerance; records are saved raw and reproduce
the metrics; workers in several processes merge; failures are counted; and a client that cannot keep up makes
the run INVALID instead of producing numbers.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from pytest_dsbench.load import datasets, runner
from pytest_dsbench.load.datasets import DatasetSpec
from pytest_dsbench.load.formats import sglang_record, sglang_text
from pytest_dsbench.load.records import RequestRecord, read_jsonl
from pytest_dsbench.load.runner import LoadConfig, LoadError, run_load
from pytest_dsbench.load.tokenizer import CharTokenizer
from pytest_dsbench.load.worker import WorkerPlan, WorkerResult, WorkerStats
from pytest_dsbench.metrics import summarize
from pytest_dsbench.testing.fake_process import ServerProcess

CHARS = CharTokenizer()
TTFT_MS, ITL_MS = 100.0, 20.0


@pytest.fixture(scope="module")
def timed_fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("fake") / "fake.log"
    with ServerProcess.fake_engine({"ttft_ms": TTFT_MS, "itl_ms": ITL_MS, "max_model_len": 4096}, log) as server:
        yield server


def config(server: ServerProcess, **kw: object) -> LoadConfig:
    fields: dict[str, object] = {
        "base_url": server.base_url,
        "model": "fake-r1",
        "settle_s": 0.0,
        "dataset": DatasetSpec("random", 8, 32, 16, 1.0, seed=1),
        "max_concurrency": 4,
    }
    fields.update(kw)
    return LoadConfig(**fields)  # type: ignore[arg-type]


def test_measured_ttft_and_itl_equal_the_configured_ones(timed_fake: ServerProcess) -> None:
    run = run_load(config(timed_fake), CHARS)
    v = run.summary.values
    assert run.summary.completed == 8 and run.valid, run.client
    assert TTFT_MS <= v["ttft_ms_median"] <= TTFT_MS * 1.25, v["ttft_ms_median"]
    assert ITL_MS * 0.9 <= v["itl_ms_median"] <= ITL_MS * 1.25, v["itl_ms_median"]
    assert ITL_MS * 0.9 <= v["tpot_ms_mean"] <= ITL_MS * 1.25, v["tpot_ms_mean"]
    assert run.summary.total_output == 8 * 16 and v["output_len_mismatch_fraction"] == 0.0


def test_raw_records_are_saved_and_reproduce_the_metrics(timed_fake: ServerProcess, tmp_path: Path) -> None:
    run = run_load(
        config(timed_fake, dataset=DatasetSpec("random", 4, 16, 4, 1.0)), CHARS, raw_dir=tmp_path, name="raw"
    )
    assert run.raw_path == tmp_path / "raw.jsonl"
    header, records = read_jsonl(run.raw_path)
    assert header["workload"]["dataset"] == "random" and header["workload"]["range_convention"] == "sglang"
    assert header["valid"] is True and "api_key" not in json.dumps(header)
    assert [r.index for r in records] == [0, 1, 2, 3]
    assert all(r.chunk_s and r.start_s < r.chunk_s[0] <= r.end_s for r in records)
    again = summarize(records, run.summary.duration_s)
    assert again["ttft_ms_mean"] == pytest.approx(run.summary["ttft_ms_mean"])
    assert again["tpot_ms_p99"] == pytest.approx(run.summary["tpot_ms_p99"])


def test_worker_processes_share_the_load_and_merge_their_records(timed_fake: ServerProcess) -> None:
    run = run_load(config(timed_fake, workers=2, max_concurrency=4), CHARS)
    assert [r.index for r in run.records] == list(range(8))
    assert {r.worker for r in run.records} == {0, 1}
    assert len(run.client.workers) == 2 if run.client else False
    assert TTFT_MS <= run.summary["ttft_ms_median"] <= TTFT_MS * 1.3


def test_max_concurrency_holds_requests_back_and_reports_the_queue_wait(timed_fake: ServerProcess) -> None:
    run = run_load(config(timed_fake, max_concurrency=1, dataset=DatasetSpec("random", 3, 16, 4, 1.0)), CHARS)
    spans = sorted((r.start_s, r.end_s) for r in run.records)
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans))
    assert run.summary["client_queue_wait_ms_mean"] > 0


def test_wrong_model_fails_the_warmup_with_one_line(timed_fake: ServerProcess) -> None:
    with pytest.raises(LoadError) as failure:
        run_load(config(timed_fake, model="no-such-model"), CHARS)
    message = str(failure.value)
    assert message.startswith("warmup failed: none of 1 warmup request(s)") and "HTTP 404" in message
    assert "\n" not in message


def test_unreachable_server_fails_the_warmup_with_one_line() -> None:
    cfg = LoadConfig(base_url="http://127.0.0.1:9", model="m", dataset=DatasetSpec("random", 2, 8, 2, 1.0))
    with pytest.raises(LoadError, match=r"warmup failed.*connect failed"):
        run_load(cfg, CHARS)


def test_requests_that_fail_count_in_the_error_rate(tmp_path: Path) -> None:
    fake = {"ttft_ms": 5, "itl_ms": 5, "faults": ["stream_hang_under_concurrency"]}
    with ServerProcess.fake_engine(fake, tmp_path / "fake.log") as server:
        run = run_load(config(server, warmup_requests=0, request_timeout_s=1.5), CHARS)
    assert 0 < run.summary.failed < 8 and run.summary["error_rate"] == run.summary.failed / 8
    assert any("timeout" in e for e in run.errors())


def test_sglang_text_block_has_the_labels_the_seeds_read(timed_fake: ServerProcess) -> None:
    run = run_load(config(timed_fake, dataset=DatasetSpec("random", 2, 16, 4, 1.0)), CHARS)
    text = sglang_text(run, "vllm")
    assert text.splitlines()[0] == "============ Serving Benchmark Result ============"
    for label in (
        "Backend:",
        "Successful requests:",
        "Output token throughput (tok/s):",
        "Mean TPOT (ms):",
        "P99 TTFT (ms):",
        "Max ITL (ms):",
        "Concurrency:",
    ):
        assert any(line.startswith(label) for line in text.splitlines()), label
    line = next(ln for ln in text.splitlines() if ln.startswith("Output token throughput"))
    assert float(line.split()[-1]) == pytest.approx(run.summary["output_tok_s"], abs=0.01)
    record = sglang_record(run, "vllm")
    assert record["completed"] == 2 and len(record["itls"]) == 2 and record["mean_tpot_ms"] > 0


def test_client_starved_of_the_gil_reports_an_invalid_run(timed_fake: ServerProcess) -> None:
    stop = threading.Event()

    def hog() -> None:
        while not stop.is_set():
            sum(range(20_000))

    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.1)  # the hog keeps the GIL 100 ms at a time: the client's loop is starved
    thread = threading.Thread(target=hog, daemon=True)
    thread.start()
    try:
        run = run_load(config(timed_fake, warmup_requests=0), CHARS)
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(switch)
    assert not run.valid and run.client is not None
    assert "INVALID run, the load generator was the bottleneck" in run.client.message()
    assert "event-loop lag p" in run.client.message()


STARVED = textwrap.dedent("""
    import json, os, sys
    from pytest_dsbench.load.datasets import DatasetSpec
    from pytest_dsbench.load.runner import LoadConfig, run_load
    from pytest_dsbench.load.tokenizer import CharTokenizer
    if __name__ == "__main__":
        os.sched_setaffinity(0, {0})
        if sys.argv[2] == "starved":
            os.nice(15)  # the spinner on the same core gets ~30x the CPU share
        cfg = LoadConfig(base_url=sys.argv[1], model="fast", settle_s=0.0, warmup_requests=0,
                         dataset=DatasetSpec("random", 64, 8, 120, 1.0), max_concurrency=64)
        run = run_load(cfg, CharTokenizer())
        print(json.dumps({"valid": run.valid, "problems": run.client.problems}))
""")


def _pinned_run(script: Path, base_url: str, mode: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, str(script), base_url, mode], capture_output=True, text=True, timeout=120, check=True
    )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# slow: depends on the scheduler starving the pinned client, which a busy 2-core machine does not always do.
@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2, reason="needs 2 CPUs")
def test_client_pinned_to_a_busy_core_reports_an_invalid_run(tmp_path: Path) -> None:
    script = tmp_path / "starved.py"
    script.write_text(STARVED, encoding="utf-8")
    with ServerProcess.fast_stream(tmp_path / "fast.log", ttft_ms=5, itl_ms=5, cpu=1) as server:
        alone = _pinned_run(script, server.base_url, "alone")
        spinner = subprocess.Popen([sys.executable, "-c", "import os\nos.sched_setaffinity(0, {0})\nwhile 1: pass"])
        try:
            time.sleep(0.2)
            starved = _pinned_run(script, server.base_url, "starved")
        finally:
            spinner.kill()
            spinner.wait()
    assert alone["valid"] is True, alone  # the same load on a core of its own is measured
    assert starved["valid"] is False, starved
    problems = starved["problems"]
    assert isinstance(problems, list) and any("runnable" in p or "event-loop lag" in p for p in problems)


def test_a_time_limit_stops_sending_and_counts_the_rest_as_unsent(timed_fake: ServerProcess) -> None:
    cfg = config(timed_fake, max_concurrency=1, max_duration_s=0.6, dataset=DatasetSpec("random", 10, 16, 8, 1.0))
    run = run_load(cfg, CHARS)
    sent = len(run.records)
    assert 1 <= sent < 10 and run.summary["unsent_requests"] == 10 - sent
    assert run.summary.failed == 0 and run.summary["error_rate"] == 0.0


def test_a_load_run_reports_its_progress_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_dsbench import progress

    monkeypatch.setattr(progress, "_terminal", lambda: None)  # write to stderr, not pytest's terminal
    monkeypatch.setenv("DSBENCH_PROGRESS", "lines")
    with ServerProcess.fast_stream(tmp_path / "fast.log", ttft_ms=5, itl_ms=5) as server:
        cfg = LoadConfig(base_url=server.base_url, model="fast", settle_s=0.0, warmup_requests=0,
                         dataset=DatasetSpec("random", 8, 8, 8, 1.0), max_concurrency=2)
        run_load(cfg, CharTokenizer(), name="tencent-c2")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[dsbench] tencent-c2:")]
    assert lines and lines[-1].startswith("[dsbench] tencent-c2: 8/8 req (100%)")


def test_a_worker_raises_its_open_files_limit_to_the_hard_limit() -> None:
    import resource

    from pytest_dsbench.load.worker import raise_open_files_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        raised = raise_open_files_limit()
        assert raised == resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= min(hard, 65535) > 256
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class RecordingWarmup:
    """Stands in for the warmup's executor: keeps the prompts it was asked to send, answers each with success."""

    prompts: ClassVar[list[str]] = []

    def run(self, plans: list[WorkerPlan], start: object = None) -> list[WorkerResult]:
        bodies = [json.loads(r.data.split(b"\r\n\r\n", 1)[1]) for r in plans[0].requests]
        RecordingWarmup.prompts = [b["prompt"] for b in bodies]
        records = [RequestRecord(r.index, r.prompt_len, r.max_tokens, success=True) for r in plans[0].requests]
        return [WorkerResult(records=records, stats=WorkerStats(worker=0))]


def warmup_prompts(monkeypatch: pytest.MonkeyPatch, **kw: object) -> tuple[list[str], list[str]]:
    """The prompts a warmup sends and the run's own prompts."""
    monkeypatch.setattr(runner, "ThreadExecutor", RecordingWarmup)
    cfg = LoadConfig(
        base_url="http://127.0.0.1:9", model="m", dataset=DatasetSpec("random", 4, 24, 8, 1.0, seed=3), **kw
    )  # type: ignore[arg-type]
    prompts = datasets.build(cfg.dataset, CHARS)
    runner._warmup(cfg, CHARS, prompts[0], {})
    return RecordingWarmup.prompts, [p.text for p in prompts]


def test_a_warm_workloads_warmup_sends_copies_of_the_first_request_as_sglang_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warm, run = warmup_prompts(monkeypatch, warmup_requests=3, settle_s=0.0, prefix_cache="warm")
    assert warm == [run[0]] * 3


def test_a_cold_workloads_warmup_copies_are_salted_apart_from_the_first_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Copies of request 0 would leave its blocks cached for the measured run."""
    warm, run = warmup_prompts(monkeypatch, warmup_requests=3, settle_s=0.0)
    assert len(warm) == 3 and run[0] not in warm
    assert {len(CHARS.encode(w)) for w in warm} == {len(CHARS.encode(run[0]))}
    assert {w[datasets.SALT_TOKENS:] for w in warm} == {run[0][datasets.SALT_TOKENS:]}


def test_fresh_warmup_prompts_have_the_runs_lengths_but_none_of_its_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    warm, run = warmup_prompts(monkeypatch, warmup_requests=3, settle_s=0.0, warmup_fresh_prompts=True)
    assert len(set(warm)) == 3 and not set(warm) & set(run)
    assert {len(CHARS.encode(p)) for p in warm} == {len(CHARS.encode(p)) for p in run}
