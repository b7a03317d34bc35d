"""The sglang.bench_serving bridge: its command line, reading its output back, venv errors, and (when the venv
exists) the official tool and this suite's client agreeing on a fake engine with fixed TTFT and ITL.
"""

from __future__ import annotations

import json
import os
import stat
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.engines.vllm.behaviour import BEHAVIOUR as VLLM_BEHAVIOUR
from pytest_dsbench.load import sglang_bridge
from pytest_dsbench.load import side_by_side as side_by_side_module
from pytest_dsbench.load.api import LoadContext
from pytest_dsbench.load.datasets import DatasetSpec, build
from pytest_dsbench.load.records import RequestRecord
from pytest_dsbench.load.runner import LoadConfig, LoadRun, run_load
from pytest_dsbench.load.sglang_bridge import ReferenceToolError, command, ensure_venv, run_sglang
from pytest_dsbench.load.side_by_side import HOLD_LEAD_S, SideBySide, run_lock_step_rounds, run_side_by_side
from pytest_dsbench.load.tokenizer import load_tokenizer
from pytest_dsbench.metrics import summarize
from pytest_dsbench.testing.fake_process import ServerProcess
from pytest_dsbench.thresholds import load as load_profile


def cfg(**kw: object) -> LoadConfig:
    fields: dict[str, object] = {
        "base_url": "http://127.0.0.1:8000",
        "model": "tiny-r1",
        "dataset": DatasetSpec("random", 16, 128, 32, 1.0, seed=42),
        "max_concurrency": 8,
    }
    fields.update(kw)
    return LoadConfig(**fields)  # type: ignore[arg-type]


def test_command_runs_the_same_workload_offline_with_random_ids() -> None:
    cmd = command(cfg(request_rate=4.0), Path("/venv/bin/python"), "/tok", Path("/out.jsonl"))
    assert cmd[:3] == ["/venv/bin/python", "-m", "sglang.bench_serving"]
    args = dict(zip(cmd[3::2], cmd[4::2], strict=False))
    assert args["--backend"] == "vllm" and args["--dataset-name"] == "random-ids"
    for flag, value in {
        "--random-input-len": "128",
        "--random-output-len": "32",
        "--random-range-ratio": "1.0",
        "--num-prompts": "16",
        "--request-rate": "4.0",
        "--seed": "42",
        "--max-concurrency": "8",
        "--tokenizer": "/tok",
        "--model": "tiny-r1",
        "--base-url": "http://127.0.0.1:8000",
    }.items():
        assert cmd[cmd.index(flag) + 1] == value, flag
    assert "--output-details" in cmd and "--dataset-path" not in cmd


def test_chat_runs_use_the_chat_backend_and_sharegpt_its_file(tmp_path: Path) -> None:
    sharegpt = tmp_path / "sg.json"
    cmd = command(
        cfg(endpoint="chat", dataset=DatasetSpec("sharegpt", 4, dataset_path=sharegpt)),
        Path("py"),
        "/tok",
        Path("o"),
    )
    assert cmd[cmd.index("--backend") + 1] == "vllm-chat" and cmd[cmd.index("--dataset-path") + 1] == str(sharegpt)
    assert cmd[cmd.index("--request-rate") + 1] == "inf"


FAKE_SGLANG = """#!{python}
import json, sys, os, time
args = sys.argv[1:]
get = lambda flag: args[args.index(flag) + 1]
n = int(get("--num-prompts")); out_len = int(get("--random-output-len"))
if n == 0:
    sys.exit("ValueError: num_prompts must be positive")
assert os.environ.get("HF_HUB_OFFLINE") == "1"
with open(os.environ["FAKE_LOG"], "w") as f:
    json.dump({{"argv": args, "key": os.environ.get("OPENAI_API_KEY")}}, f)
result = {{"duration": 2.0, "completed": n, "total_input_tokens": 128 * n, "total_output_tokens": out_len * n,
          "total_output_tokens_retokenized": out_len * n, "request_throughput": n / 2.0, "input_throughput":
          64.0 * n,
          "output_throughput": out_len * n / 2.0, "total_throughput": 1.0, "mean_ttft_ms": 111.0,
          "median_ttft_ms": 110.0, "std_ttft_ms": 1.0, "p90_ttft_ms": 112.0, "p95_ttft_ms": 113.0,
          "p99_ttft_ms": 114.0,
          "mean_tpot_ms": 12.5, "median_tpot_ms": 12.0, "std_tpot_ms": 0.5, "p90_tpot_ms": 13.0,
          "p95_tpot_ms": 13.5,
          "p99_tpot_ms": 14.0, "mean_itl_ms": 12.4, "median_itl_ms": 12.0, "std_itl_ms": 1.0, "p90_itl_ms":
          13.0,
          "p95_itl_ms": 14.0, "p99_itl_ms": 15.0, "max_itl_ms": 30.0, "mean_e2e_latency_ms": 500.0,
          "median_e2e_latency_ms": 500.0, "std_e2e_latency_ms": 1.0, "p90_e2e_latency_ms": 510.0,
          "p95_e2e_latency_ms": 511.0, "p99_e2e_latency_ms": 512.0, "concurrency": 7.5,
          "max_output_tokens_per_s": 99.0, "max_concurrent_requests": 8,
          "input_lens": [127] * n, "output_lens": [out_len] * n, "ttfts": [0.11] * n,
          "itls": [[0.0125] * (out_len - 1)] * n, "generated_texts": ["abc"] * n, "errors": [""] * n}}
time.sleep(float(os.environ.get("FAKE_STARTUP_S", "0")))  # the real tool's imports take seconds
if not os.environ.get("FAKE_NO_MARKER"):
    print("Warmup completed with 1 sequences. Starting main benchmark run...", flush=True)
if os.environ.get("FAKE_MAIN_START"):  # sglang sleeps a second after the marker, then sends
    time.sleep(1.0)
    with open(os.environ["FAKE_MAIN_START"], "w") as f:
        f.write(repr(time.perf_counter()))
    time.sleep(0.5)
with open(get("--output-file"), "a") as f:
    f.write(json.dumps(result) + "\\n")
print("============ Serving Benchmark Result ============")
"""


@pytest.fixture
def fake_venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_SGLANG.format(python=sys.executable), encoding="utf-8")
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("DSBENCH_SGLANG_VENV", str(tmp_path / "venv"))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "fake-argv.json"))
    return tmp_path


def tokenizer_dir(folder: Path) -> Path:
    """A local Hugging Face tokenizer folder (sglang loads it with transformers)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        ["the model streams tokens"] * 20,
        trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    return folder


def test_sglangs_aggregates_become_the_runs_values_unaltered(fake_venv: Path) -> None:
    tok = tokenizer_dir(fake_venv / "tok")
    run = run_sglang(cfg(api_key="sk-secret"), str(tok), fake_venv / "raw", "ref")
    v = run.summary.values
    assert run.generator == "sglang" and run.client is None and run.valid
    assert v["ttft_ms_mean"] == 111.0 and v["tpot_ms_p99"] == 14.0 and v["itl_ms_max"] == 30.0
    assert v["output_tok_s"] == pytest.approx(16 * 32 / 2.0) and v["qpm"] == pytest.approx(60 * 8.0)
    assert len(run.records) == 16 and run.records[0].chunk_s[0] == pytest.approx(0.11)
    assert len(run.records[0].chunk_s) == 32 and run.summary.samples["ttft"][0] == pytest.approx(110.0)
    call = json.loads((fake_venv / "fake-argv.json").read_text())
    assert call["key"] == "sk-secret" and "sk-secret" not in " ".join(call["argv"])  # key by env, not argv
    assert "sk-secret" not in (fake_venv / "raw" / "ref.sglang.log").read_text()
    assert run.reference is not None and run.reference["cpu_s"] >= 0


def test_sglang_needs_a_tokenizer_folder(fake_venv: Path) -> None:
    with pytest.raises(ReferenceToolError, match="needs a local tokenizer folder: pass --tokenizer PATH"):
        run_sglang(cfg(), "chars", fake_venv / "raw")


def test_a_failing_sglang_run_is_one_line_with_its_log(fake_venv: Path) -> None:
    tok = tokenizer_dir(fake_venv / "tok")
    with pytest.raises(ReferenceToolError, match=r"sglang.bench_serving exited 1: .*\(log: .*ref.sglang.log\)"):
        run_sglang(cfg(dataset=DatasetSpec("random", 0, 8, 8, 1.0)), str(tok), fake_venv / "raw", "ref")


def test_venv_creation_failure_names_the_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sglang_bridge.sys, "executable", "/bin/false")
    with pytest.raises(ReferenceToolError) as failure:
        ensure_venv(tmp_path / "venv")
    message = str(failure.value)
    assert message.startswith("creating the sglang venv failed at 'python -m venv' (exit 1)") and "\n" not in message
    assert not (tmp_path / "venv").exists()  # a half-built venv is never left for the next run


REAL_VENV = sglang_bridge.venv_python().is_file()


SGLANG_PROMPTS = """
import json, random, sys
import numpy as np
from transformers import AutoTokenizer
from sglang.benchmark.datasets.random import sample_random_requests
tok = AutoTokenizer.from_pretrained(sys.argv[1], local_files_only=True)
random.seed(7); np.random.seed(7)
rows = sample_random_requests(input_len=48, output_len=16, num_prompts=4, range_ratio=0.5, tokenizer=tok,
                              dataset_path="", random_sample=False)
print(json.dumps([[r.prompt, r.prompt_len, r.output_len] for r in rows]))
"""


@pytest.mark.skipif(not REAL_VENV, reason="the sglang venv is not built here")
def test_random_ids_prompts_are_byte_identical_to_sglangs(tmp_path: Path) -> None:
    import subprocess

    tok = tokenizer_dir(tmp_path / "tok")
    out = subprocess.run(
        [str(sglang_bridge.venv_python()), "-c", SGLANG_PROMPTS, str(tok)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    ours = build(DatasetSpec("random-ids", 4, 48, 16, 0.5, seed=7), load_tokenizer(str(tok)))
    assert [[p.text, p.prompt_len, p.output_len] for p in ours] == theirs


def _server_truth(base_url: str) -> dict[str, float]:
    """Mean TTFT and TPOT (ms) from the server's own record of when it received and sent everything."""
    sent = httpx.get(base_url + "/send_times", timeout=10).json()["requests"]
    httpx.post(base_url + "/reset", timeout=10)
    return {
        "ttft_ms_mean": statistics.fmean((r["sends"][0] - r["arrival"]) * 1000 for r in sent),
        "tpot_ms_mean": statistics.fmean((r["sends"][-1] - r["sends"][0]) / (len(r["sends"]) - 1) * 1000 for r in sent),
    }


@pytest.mark.skipif(
    not REAL_VENV,
    reason="the sglang venv is not built here (created on demand by --load-generator "
    "sglang and the cross-check; see sglang_bridge.ensure_venv)",
)
def test_official_tool_and_this_client_agree_with_the_servers_own_timing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each client against what the server itself recorded in the same run (host noise cancels out)."""
    monkeypatch.delenv("DSBENCH_SGLANG_VENV", raising=False)
    tok = tokenizer_dir(tmp_path / "tok")
    with ServerProcess.fast_stream(tmp_path / "server.log", ttft_ms=150, itl_ms=20) as server:
        workload = cfg(
            base_url=server.base_url,
            model="fast",
            dataset=DatasetSpec("random-ids", 16, 64, 40, 1.0),
            max_concurrency=16,
            warmup_requests=0,
            include_usage=False,
        )
        httpx.post(server.base_url + "/reset", timeout=10)
        ours = run_load(workload, load_tokenizer(str(tok))).summary
        ours_truth = _server_truth(server.base_url)
        theirs = run_sglang(workload, str(tok), tmp_path / "raw", "ref").summary
        theirs_truth = _server_truth(server.base_url)
    assert ours["tpot_ms_mean"] == pytest.approx(ours_truth["tpot_ms_mean"], rel=0.03)
    assert theirs["tpot_ms_mean"] == pytest.approx(theirs_truth["tpot_ms_mean"], rel=0.05)
    # TTFT: both include the request's trip to the server; sglang's also a session and connection per request.
    ours_error = ours["ttft_ms_mean"] - ours_truth["ttft_ms_mean"]
    theirs_error = theirs["ttft_ms_mean"] - theirs_truth["ttft_ms_mean"]
    assert 0.0 <= ours_error <= max(theirs_error, 0.0) + 2.0, (ours_error, theirs_error)


PROFILE = """[deployment]
max_model_len = 4096
max_input_len = 2048
[throughput.tencent]
method = "tencent"
input_len = 32
output_len = 32
num_prompts = 8
max_concurrency = 4
"""


def test_reference_check_fails_in_every_arrangement_when_the_official_tool_disagrees(
    run_on_fake_hw: Callable[..., pytest.RunResult], fake_venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = str(tokenizer_dir(tmp_path / "tok"))
    monkeypatch.setenv("FAKE_STARTUP_S", "2")  # side by side, this suite's client is ready first
    # a first token after 200 ms: the hold request, sent 100 ms ahead, is still running when the waves land
    with ServerProcess.fake_engine({"ttft_ms": 200, "itl_ms": 5}, tmp_path / "fake.log") as server:
        result = run_on_fake_hw("test_throughput_reference.py", server.base_url, PROFILE, tokenizer=tok)
    result.assert_outcomes(failed=3)
    result.stdout.fnmatch_lines(
        [
            "*reference_diff_pct = * %, limit <= 3 % (ttft_ms_mean, this suite vs sglang.bench_serving per round: "
            "* vs 111, * vs 111, * vs 111)*"
        ]
    )


SLO_PROFILE = PROFILE + "[slo]\ntpot_ms_mean_max = {limit}\n"


@pytest.mark.parametrize(("limit", "outcome"), [(50.0, "passed"), (10.0, "failed")])
def test_load_generator_sglang_puts_the_official_numbers_through_the_slo_tests(
    run_on_fake_hw: Callable[..., pytest.RunResult], fake_venv: Path, tmp_path: Path, limit: float, outcome: str
) -> None:
    tok = str(tokenizer_dir(tmp_path / "tok"))
    with ServerProcess.fake_engine({"ttft_ms": 10, "itl_ms": 5}, tmp_path / "fake.log") as server:
        profile = SLO_PROFILE.format(limit=limit)
        result = run_on_fake_hw(
            "test_slo.py", server.base_url, profile, "-k", "tpot_ms_mean", "--load-generator", "sglang", tokenizer=tok
        )
    result.assert_outcomes(**{outcome: 1})
    # the fake official tool reports a mean TPOT of 12.5 ms whatever the engine does
    result.stdout.fnmatch_lines(["*tpot_ms_mean (ms)*12.5*"])
    assert json.loads((tmp_path / "fake-argv.json").read_text())["argv"][:2] == ["-m", "sglang.bench_serving"]


def test_a_workload_the_official_tool_cannot_express_is_refused() -> None:
    from pytest_dsbench.errors import DsbenchUsageError

    with pytest.raises(DsbenchUsageError, match=r"has no burstiness option, the workload asks for burstiness 0\.5"):
        command(cfg(request_rate=4.0, burstiness=0.5), Path("py"), "/tok", Path("o"))


def side_by_side_context(base_url: str, tok: Path, artifacts: Path) -> LoadContext:
    engine = EngineInfo(
        name="vllm",
        version="0.32.0",
        base_url=base_url,
        model="fast",
        model_path=None,
        tokenizer_path=None,
        max_model_len=4096,
        behaviour=VLLM_BEHAVIOUR,
        mode="attach",
    )
    options: Any = SimpleNamespace(
        tokenizer=str(tok),
        artifacts_dir=artifacts,
        request_timeout_s=30.0,
        load_workers=1,
        load_generator="dsbench",
        datasets_dir=None,
        load_executor=None,
        ray_address=None,
    )
    return LoadContext(engine, options, load_profile("cpu"))


WAVE = DatasetSpec("random-ids", 2, 16, 8, 1.0, seed=7)


def run_pair(ctx: LoadContext) -> SideBySide:
    return run_side_by_side(ctx, WAVE, name="pair", hold_tokens=64, start_wait_s=60)


def test_side_by_side_holds_the_engine_then_starts_both_waves_together(
    fake_venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MAIN_START", str(tmp_path / "main-start"))
    monkeypatch.setenv("FAKE_STARTUP_S", "3")  # this suite's client is ready first, as with the real tool
    tok = tokenizer_dir(tmp_path / "tok")
    with ServerProcess.fast_stream(tmp_path / "server.log", ttft_ms=5, itl_ms=5) as server:
        pair = run_pair(side_by_side_context(server.base_url, tok, tmp_path))
        sent = httpx.get(server.base_url + "/send_times", timeout=10).json()["requests"]
    warmup, hold, *wave = sorted(r["arrival"] for r in sent)  # the fake tool sends nothing
    main_start = float((tmp_path / "main-start").read_text())  # the fake tool's clock: the same monotonic clock
    assert warmup < main_start - 1.0 and len(wave) == 2
    assert hold == pytest.approx(main_start - HOLD_LEAD_S, abs=0.05)
    # either side: the fake's own one-second sleep can overshoot on a loaded host, as this client's start can lag
    assert all(abs(t - main_start) < 0.25 for t in wave), [t - main_start for t in wave]
    assert pair.ours.generator == "dsbench" and pair.theirs.generator == "sglang" and pair.start_gap_s == 0.0
    argv = fake_argv(tmp_path)
    assert argv[argv.index("--seed") + 1] == "7" and argv[argv.index("--max-concurrency") + 1] == "2"  # one wave
    # the fake server answers the hold in 5 ms, long before the waves: not a lock-step round
    assert (pair.lock_step_problem() or "").startswith("the hold request ended")


def side_by_side(ours_first_tokens_s: list[float], theirs_ttfts_s: list[float], hold_left_s: float = 0.1) -> SideBySide:
    def run(records: list[RequestRecord]) -> LoadRun:
        return LoadRun(cfg(), records, summarize(records, 1.0), client=None)

    ours = [
        RequestRecord(i, 16, 8, start_s=0.001 * i, chunk_s=[t], success=True) for i, t in enumerate(ours_first_tokens_s)
    ]
    theirs = [RequestRecord(i, 16, 8, chunk_s=[t], success=True) for i, t in enumerate(theirs_ttfts_s)]
    return SideBySide(run(ours), run(theirs), start_gap_s=0.0, hold_left_s=hold_left_s)


def test_waves_whose_first_tokens_came_together_are_in_lock_step() -> None:
    assert side_by_side([0.400, 0.402], [0.401, 0.401]).lock_step_problem() is None


def test_a_wave_split_over_two_engine_steps_is_not_in_lock_step() -> None:
    problem = side_by_side([0.067, 0.452], [0.452, 0.452]).lock_step_problem()
    assert problem == "this suite's wave got its first tokens 385 ms apart (more than one engine step)"
    problem = side_by_side([0.452, 0.452], [0.675, 1.089]).lock_step_problem()
    assert problem == "sglang.bench_serving's wave got its first tokens 414 ms apart (more than one engine step)"


def test_a_hold_that_ended_before_the_waves_is_not_lock_step() -> None:
    problem = side_by_side([0.4, 0.4], [0.4, 0.4], hold_left_s=-0.02).lock_step_problem()
    assert problem == "the hold request ended 20 ms before the waves were sent"


def test_a_wave_that_started_late_is_not_lock_step() -> None:
    pair = side_by_side([0.4, 0.4], [0.4, 0.4])
    pair.start_gap_s = 0.3
    assert pair.lock_step_problem() == (
        "this suite's client was ready 300 ms after sglang.bench_serving's measured run began"
    )


def test_rounds_not_in_lock_step_are_run_again_with_fresh_prompts_until_enough_are(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seeds: list[int] = []

    def round_(ctx: object, prompts: DatasetSpec, *, name: str, hold_tokens: int | None) -> SideBySide:
        seeds.append(prompts.seed)
        split = len(seeds) in (2, 3)  # the second and third rounds: this suite's wave split over two steps
        return side_by_side([0.067, 0.452] if split else [0.4, 0.4], [0.4, 0.4])

    monkeypatch.setattr(side_by_side_module, "run_side_by_side", round_)
    done = run_lock_step_rounds(cast(LoadContext, None), WAVE, rounds=3, max_attempts=6, name="r", hold_tokens=64)
    assert len(done.pairs) == 3 and done.attempts == 5 and seeds == [8, 9, 10, 11, 12]
    assert done.discarded == [
        f"round {i}: this suite's wave got its first tokens 385 ms apart (more than one engine step)" for i in (1, 2)
    ]
    done = run_lock_step_rounds(cast(LoadContext, None), WAVE, rounds=5, max_attempts=2, name="r", hold_tokens=64)
    assert done.attempts == 2  # gives up: the caller reports the discarded rounds


def test_side_by_side_fails_in_one_line_when_the_official_tool_never_announces_its_run(
    fake_venv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_NO_MARKER", "1")
    tok = tokenizer_dir(tmp_path / "tok")
    with (
        ServerProcess.fast_stream(tmp_path / "server.log") as server,
        pytest.raises(ReferenceToolError, match="finished without printing 'Starting main benchmark run'") as failure,
    ):
        run_pair(side_by_side_context(server.base_url, tok, tmp_path))
    assert "\n" not in str(failure.value)


def fake_argv(folder: Path) -> list[str]:
    argv: list[str] = json.loads((folder / "fake-argv.json").read_text())["argv"]
    return argv
