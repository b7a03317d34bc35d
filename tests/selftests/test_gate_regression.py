"""The regression gate end to end: pytest runs against fake engines, stored history, ``--dsbench-compare``.

Each inner run streams requests to a fake engine, records ``tpot_ms_mean`` and ``output_tok_s`` with their
per-request samples through ``dsbench_gate``, and stores the run. A slower engine must then fail inside the
test (exit code 1 and a JUnit failure); an unchanged one must not; mismatched provenance must be refused.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_dsbench.testing.fake_engine import FakeEngineThread

FAST = {"ttft_ms": 2.0, "itl_ms": 4.0}
SLOW = {"ttft_ms": 2.0, "itl_ms": 9.0}

MEASURE = """
import json, os, statistics, time

NUM_PROMPTS = int(os.environ.get("DSBENCH_SELFTEST_PROMPTS", "16"))
MAX_TOKENS = 12


def _one(client, model):
    body = {"model": model, "messages": [{"role": "user", "content": "count"}], "max_tokens": MAX_TOKENS,
            "stream": True, "ignore_eos": True}
    sent = time.perf_counter()
    stamps = []
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or []
            delta = choices[0].get("delta", {}) if choices else {}
            if delta.get("reasoning") or delta.get("content"):
                stamps.append(time.perf_counter())
    tpot_ms = (stamps[-1] - stamps[0]) / (len(stamps) - 1) * 1000
    return tpot_ms, len(stamps), stamps[-1] - sent


def test_decode(dsbench_engine, openai_client, dsbench_gate):
    started = time.perf_counter()
    records = [_one(openai_client, dsbench_engine.model) for _ in range(NUM_PROMPTS)]
    duration = time.perf_counter() - started
    workload = {"num_prompts": NUM_PROMPTS, "max_tokens": MAX_TOKENS}
    tpots = [r[0] for r in records]
    dsbench_gate.record("tpot_ms_mean", statistics.fmean(tpots), samples=tpots, workload=workload)
    dsbench_gate.record("output_tok_s", sum(r[1] for r in records) / duration,
                        samples=[r[1] / r[2] for r in records], workload=workload)
    dsbench_gate.check()
"""


@pytest.fixture
def run_against(
    pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread]
) -> Callable[..., pytest.RunResult]:
    """Run the measuring test file against a fresh fake engine with the given FakeConfig fields."""
    pytester.makepyfile(test_measure=MEASURE)

    def run(*args: str, **fake: object) -> pytest.RunResult:
        engine = make_fake_engine(**fake)
        return pytester.runpytest(
            "--base-url", engine.base_url, "--dsbench-storage", "history", "-p", "no:cacheprovider", *args
        )

    return run


def stored_runs(root: Path, folder: str = "vllm-cpu") -> list[Path]:
    return sorted((root / "history" / folder).glob("*/[0-9][0-9][0-9][0-9]_*.json"))


def test_a_run_is_stored_with_provenance_and_raw_samples(
    pytester: pytest.Pytester, run_against: Callable[..., pytest.RunResult]
) -> None:
    run_against(**FAST).assert_outcomes(passed=1)
    [path] = stored_runs(pytester.path)
    assert re.fullmatch(r"0001_[0-9a-z]+_\d{8}_\d{6}_[0-9a-f]{4}\.json", path.name)
    doc = json.loads(path.read_text())
    prov = doc["dsbench"]["provenance"]
    assert (prov["engine"], prov["engine_version"], prov["model"], prov["hw"]) == (
        "vllm",
        "0.0.0-fake",
        "fake-r1",
        "cpu",
    )
    assert prov["hw_profile"]["sha256"] and prov["suite_version"] and prov["time"] and prov["git"]["id"]
    assert doc["machine_info"]["engine"] == "vllm"
    tpot = next(b for b in doc["benchmarks"] if b["group"] == "tpot_ms_mean")
    assert tpot["stats"]["rounds"] == 16 and len(tpot["stats"]["data"]) == 16
    assert tpot["extra_info"]["dsbench"]["workload"] == {"num_prompts": 16, "max_tokens": 12}
    assert tpot["extra_info"]["dsbench"]["scale"] == 0.001
    assert 0.003 < tpot["stats"]["median"] < 0.05, "TPOT is stored in seconds for pytest-benchmark"


def test_pytest_benchmark_reads_the_stored_history(
    pytester: pytest.Pytester, run_against: Callable[..., pytest.RunResult]
) -> None:
    run_against(**FAST).assert_outcomes(passed=1)
    listing = pytester.run("pytest-benchmark", "--storage", "history/vllm-cpu", "list")
    assert listing.ret == 0
    listing.stdout.fnmatch_lines(["*0001_*.json"])
    compared = pytester.run(
        "pytest-benchmark", "--storage", "history/vllm-cpu", "compare", "--group-by=group"
    )
    assert compared.ret == 0
    compared.stdout.fnmatch_lines(["*test_decode::tpot_ms_mean*"])


def test_a_slower_engine_fails_the_test_with_exit_code_and_junit(
    pytester: pytest.Pytester, run_against: Callable[..., pytest.RunResult]
) -> None:
    run_against(**FAST).assert_outcomes(passed=1)
    result = run_against("--dsbench-compare", "latest", "--junitxml", "junit.xml", **SLOW)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*tpot_ms_mean regressed against run vllm-cpu/0001_*: baseline * ms, measured * ms (+*%, worse); "
            "expected at most 25% worse (cpu.toml [[]regress_pct]); Mann-Whitney U one-sided p=* < 0.01 "
            "(99% confidence), 16 vs 16 samples*",
        ]
    )
    result.stdout.fnmatch_lines(["*test_decode*tpot_ms_mean (ms)*% worse*REGRESSED"])
    suite = ET.parse(pytester.path / "junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    assert len(stored_runs(pytester.path)) == 2, "the regressed run is stored too"


def test_an_unchanged_engine_passes_the_gate(run_against: Callable[..., pytest.RunResult]) -> None:
    run_against(**FAST).assert_outcomes(passed=1)
    result = run_against("--dsbench-compare", "latest", **FAST)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_decode*tpot_ms_mean (ms)*PASS",
            "baseline: run vllm-cpu/0001_*confidence 99%; run-to-run noise from 1 stored run(s)",
        ]
    )


def test_a_throughput_drop_is_caught(run_against: Callable[..., pytest.RunResult]) -> None:
    run_against(**FAST).assert_outcomes(passed=1)
    result = run_against("--dsbench-compare", "latest", "--dsbench-regress", "output_tok_s:10", **SLOW)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*output_tok_s regressed against run vllm-cpu/0001_*: baseline * tok/s, measured "
            "* tok/s (-*%, worse); expected at most 10% worse (--dsbench-regress); "
            "Mann-Whitney U*"
        ]
    )


def test_a_faster_engine_is_an_improvement_not_a_failure(
    run_against: Callable[..., pytest.RunResult],
) -> None:
    run_against(**SLOW).assert_outcomes(passed=1)
    result = run_against("--dsbench-compare", "latest", **FAST)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*tpot_ms_mean (ms)*-*% better*PASS", "*output_tok_s (tok/s)*+*% better*PASS"]
    )


def test_a_baseline_of_another_model_is_refused(run_against: Callable[..., pytest.RunResult]) -> None:
    run_against(**FAST).assert_outcomes(passed=1)
    result = run_against("--dsbench-compare", "latest", model="other-r1", **FAST)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*refusing to compare with run vllm-cpu/0001_*: model fake-r1 (baseline) vs "
            "other-r1 (this run); pass --dsbench-force-compare to compare anyway*"
        ]
    )


def test_force_compare_compares_across_models(run_against: Callable[..., pytest.RunResult]) -> None:
    run_against(**FAST).assert_outcomes(passed=1)
    result = run_against("--dsbench-compare", "latest", "--dsbench-force-compare", model="other-r1", **FAST)
    result.assert_outcomes(passed=1)


def test_a_baseline_with_another_workload_is_refused(
    run_against: Callable[..., pytest.RunResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_against(**FAST).assert_outcomes(passed=1)
    monkeypatch.setenv("DSBENCH_SELFTEST_PROMPTS", "10")
    result = run_against("--dsbench-compare", "latest", **FAST)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*refusing to compare tpot_ms_mean with run vllm-cpu/0001_*: the workload differs "
            "(num_prompts 16 -> 10); pass --dsbench-force-compare*"
        ]
    )


def test_a_baseline_of_another_engine_is_a_usage_error(run_against: Callable[..., pytest.RunResult]) -> None:
    run_against(**FAST).assert_outcomes(passed=1)
    result = run_against("--engine", "sglang", "--dsbench-compare", "vllm-cpu/latest", **FAST)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: refusing to compare with run vllm-cpu/0001_*: engine vllm (baseline) vs "
            "sglang (this run); pass --dsbench-force-compare to compare anyway"
        ]
    )


def test_an_unknown_run_is_a_usage_error(run_against: Callable[..., pytest.RunResult]) -> None:
    run_against(**FAST).assert_outcomes(passed=1)
    result = run_against("--dsbench-compare", "42", **FAST)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: no stored run '42': stored runs in *vllm-cpu: 0001 (newest last)*"])


def test_compare_latest_with_no_history_warns_and_records_the_baseline(
    pytester: pytest.Pytester, run_against: Callable[..., pytest.RunResult]
) -> None:
    result = run_against("--dsbench-compare", "latest", **FAST)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["dsbench warning: no stored run in *vllm-cpu yet: nothing to compare with*"])
    assert len(stored_runs(pytester.path)) == 1


def test_a_regression_limit_for_an_unknown_metric_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--dsbench-regress", "tpot_ms_meen:5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: --dsbench-regress: unknown metric 'tpot_ms_meen'. Did you mean: tpot_ms_mean*"]
    )


def test_storage_none_turns_saving_off(
    pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread]
) -> None:
    pytester.makepyfile(test_measure=MEASURE)
    engine = make_fake_engine(**FAST)
    pytester.runpytest("--base-url", engine.base_url, "--dsbench-storage", "none").assert_outcomes(passed=1)
    assert not list(pytester.path.rglob("[0-9][0-9][0-9][0-9]_*.json"))


VALUE_ONLY = """
import os

def test_throughput(dsbench_gate):
    dsbench_gate.record("output_tok_s", float(os.environ["DSBENCH_SELFTEST_TOK_S"]), sample_count=64,
                        workload={"num_prompts": 64})
    dsbench_gate.check()
"""


def test_a_throughput_drop_without_samples_is_caught_against_earlier_runs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_value=VALUE_ONLY)
    args = ("--dsbench-storage", "history", "-p", "no:cacheprovider")
    for tok_s in ("100", "102", "98", "101", "99"):
        monkeypatch.setenv("DSBENCH_SELFTEST_TOK_S", tok_s)
        pytester.runpytest(*args).assert_outcomes(passed=1)
    monkeypatch.setenv("DSBENCH_SELFTEST_TOK_S", "97")
    pytester.runpytest(*args, "--dsbench-compare", "latest").assert_outcomes(passed=1)
    monkeypatch.setenv("DSBENCH_SELFTEST_TOK_S", "70")
    result = pytester.runpytest(*args, "--dsbench-compare", "latest")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*output_tok_s regressed against run vllm-cpu/0006_*: baseline 97 tok/s, measured 70 tok/s "
            "(-27.8%, worse); expected at most 25% worse (cpu.toml [[]regress_pct]); run-to-run t test "
            "over 6 earlier runs (noise *%) p=* < 0.01*"
        ]
    )


def test_a_baseline_of_another_hardware_profile_is_a_usage_error(
    run_against: Callable[..., pytest.RunResult],
) -> None:
    run_against(**FAST).assert_outcomes(passed=1)
    result = run_against("--hw", "h20", "--dsbench-compare", "vllm-cpu/latest", **FAST)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: refusing to compare with run vllm-cpu/0001_*: hw cpu (baseline) vs h20 (this "
                                 "run)*; pass --dsbench-force-compare to compare anyway"])


def test_provenance_records_the_launch_without_its_secrets(
    pytester: pytest.Pytester, engine_shim: Callable[..., Path]
) -> None:
    shim = engine_shim({"api_key": "sk-launch-secret"})
    pytester.makepyfile(test_measure=MEASURE)
    result = pytester.runpytest(
        "--engine-python", str(shim), "--model", "/m/x", "--api-key", "sk-launch-secret",
        "--engine-arg=--max-num-seqs=7", "--engine-env", "HF_TOKEN=hf-env-secret", "--dsbench-storage", "history",
        "-p", "no:cacheprovider",
    )
    result.assert_outcomes(passed=1)
    [path] = stored_runs(pytester.path)
    text = path.read_text()
    assert "sk-launch-secret" not in text and "hf-env-secret" not in text
    prov = json.loads(text)["dsbench"]["provenance"]
    launch = prov["launch_command"]
    assert launch[launch.index("--api-key") + 1] == "***" and "--max-num-seqs=7" in launch
    assert prov["engine_args"] == ["--max-num-seqs=7"] and prov["engine_env"]["HF_TOKEN"] == "***"
    assert prov["max_model_len"] == 4096 and prov["mode"] == "start"
