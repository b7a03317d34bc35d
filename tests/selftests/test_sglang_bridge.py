"""The sglang.bench_serving bridge: its command line, reading its output back, venv errors, and (when the venv
exists) the official tool and this suite's client agreeing on a fake engine with fixed TTFT and ITL.
"""

from __future__ import annotations

import json
import math
import os
import stat
import sys
from pathlib import Path

import pytest

from pytest_dsbench.load import sglang_bridge
from pytest_dsbench.load.datasets import DatasetSpec
from pytest_dsbench.load.runner import LoadConfig, run_load
from pytest_dsbench.load.sglang_bridge import ReferenceToolError, command, ensure_venv, run_sglang
from pytest_dsbench.load.tokenizer import load_tokenizer
from pytest_dsbench.testing.fake_process import ServerProcess


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
import json, sys, os
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


@pytest.mark.skipif(
    not REAL_VENV,
    reason="the sglang venv is not built here (created on demand by --load-generator "
    "sglang and the cross-check; see sglang_bridge.ensure_venv)",
)
def test_official_tool_and_this_client_agree_on_a_fake_with_fixed_timing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DSBENCH_SGLANG_VENV", raising=False)
    tok = tokenizer_dir(tmp_path / "tok")
    fake = {"ttft_ms": 60, "itl_ms": 15, "max_model_len": 8192}
    with ServerProcess.fake_engine(fake, tmp_path / "fake.log") as server:
        workload = cfg(
            base_url=server.base_url,
            model="fake-r1",
            dataset=DatasetSpec("random", 16, 64, 24, 1.0),
            include_usage=False,
        )
        ours = run_load(workload, load_tokenizer(str(tok)))
        theirs = run_sglang(workload, str(tok), tmp_path / "raw", "ref")
    for metric in ("tpot_ms_mean", "itl_ms_mean", "output_tok_s"):
        a, b = ours.summary[metric], theirs.summary[metric]
        assert math.isclose(a, b, rel_tol=0.10), f"{metric}: ours {a:.2f} vs sglang {b:.2f}"
    # TTFT: sglang opens a session and a connection per request inside its timer; this client does not, so it
    # is at least as close to the fake's 60 ms.
    ttft_ours, ttft_theirs = ours.summary["ttft_ms_mean"], theirs.summary["ttft_ms_mean"]
    assert 60.0 <= ttft_ours <= ttft_theirs * 1.05, (ttft_ours, ttft_theirs)
    assert os.path.getsize(theirs.raw_path or "") > 0


REFERENCE_TEST = str(Path(__file__).resolve().parents[1] / "conformance" / "test_throughput_reference.py")
PROFILE = """
schema_version = 1
[hardware]
name = "fake"
accelerator = "fake"
devices = 1
memory_gib_per_device = 1
[deployment]
max_model_len = 4096
max_input_len = 2048
[throughput.tencent]
method = "tencent"
input_len = 32
output_len = 32
num_prompts = 8
max_concurrency = 4
"""


def test_reference_check_fails_when_the_official_tool_disagrees(
    pytester: pytest.Pytester, fake_venv: Path, tmp_path: Path
) -> None:
    tok = tokenizer_dir(tmp_path / "tok")
    (pytester.path / "fake.toml").write_text(PROFILE, encoding="utf-8")
    with ServerProcess.fake_engine({"ttft_ms": 10, "itl_ms": 5}, tmp_path / "fake.log") as server:
        result = pytester.runpytest(
            REFERENCE_TEST,
            "--base-url",
            server.base_url,
            "--tokenizer",
            str(tok),
            "--hw",
            "fake",
            "--dsbench-thresholds",
            str(pytester.path),
            "--dsbench-artifacts",
            str(pytester.path / "artifacts"),
            "-p",
            "no:cacheprovider",
        )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*reference_diff_pct = * %, limit <= 3 % (ttft_ms_mean, this suite vs sglang.bench_serving per round: "
            "* vs 111, * vs 111, * vs 111)*"
        ]
    )
