"""The accuracy suite (``pytest_dsbench/suite/test_accuracy.py``) end to end: the real EvalScope scores fake
engines, and the verdict follows the score exactly.

A fake engine answers the questions of a local data set; ``wrong_fraction`` makes it answer a fixed,
question-determined share wrongly. Each test writes a hardware profile and the data set into a pytester
folder, copies the real suite file there and runs it in attach mode. EvalScope runs in the interpreter
``DSBENCH_EVAL_PYTHON`` names, else ``.venv-eval/bin/python`` of this checkout, else this interpreter when it
can import EvalScope; without any of them these tests are skipped with the install command.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_dsbench.testing.fake_engine import FakeEngineThread

REPO = Path(__file__).resolve().parents[2]
SUITE = REPO / "pytest_dsbench" / "suite" / "test_accuracy.py"
SUITE_COPY = "test_suite_accuracy.py"  # a basename no self-test module has (pytest imports by basename)
QUESTIONS = [(f"What is {a} plus {a + 7}?", str(2 * a + 7)) for a in range(20)]
ANSWERS = dict(QUESTIONS)
GREEDY = "[accuracy_settings]\ntemperature = 0.0\ntop_p = 1.0\nmax_tokens = 128\n"
PROFILE_HEAD = """schema_version = 1
[hardware]
name = "acc"
accelerator = "none"
devices = 1
memory_gib_per_device = 1
[deployment]
max_model_len = 4096
max_input_len = 2048
max_concurrency = 4
"""


def find_eval_python() -> str | None:
    """An interpreter with EvalScope: $DSBENCH_EVAL_PYTHON, this checkout's .venv-eval, or this one."""
    configured = os.environ.get("DSBENCH_EVAL_PYTHON")
    if configured:
        return configured
    local = REPO / ".venv-eval" / "bin" / "python"
    if local.is_file():
        return str(local)
    return sys.executable if importlib.util.find_spec("evalscope") is not None else None


@pytest.fixture(scope="module")
def eval_python() -> str:
    python = find_eval_python()
    if python is None:
        pytest.skip("EvalScope is not installed: python -m venv .venv-eval && .venv-eval/bin/pip install "
                    "evalscope==1.14.1 (or set DSBENCH_EVAL_PYTHON)")
    return python


def floor_table(name: str, floor: float, limit: int = len(QUESTIONS)) -> str:
    """An ``[accuracy.<name>]`` table over the local set ``arith`` (several tables may share it)."""
    return (f'[accuracy.{name}]\nfloor = {floor!r}\nlimit = {limit}\nbenchmark = "general_qa"\n'
            'subset = "arith"\n')


@pytest.fixture
def suite(pytester: pytest.Pytester, eval_python: str) -> Callable[..., pytest.RunResult]:
    """Write profile ``acc`` (``tables`` + ``settings``) and the data; run the suite against ``engine``."""
    data = pytester.path / "data"
    data.mkdir()
    (data / "arith.jsonl").write_text(
        "".join(json.dumps({"id": f"q{i:02d}", "query": q, "response": a}) + "\n"
                for i, (q, a) in enumerate(QUESTIONS)), encoding="utf-8")
    (pytester.path / "thresholds").mkdir()
    shutil.copy(SUITE, pytester.path / SUITE_COPY)

    def run(engine: FakeEngineThread, tables: str, *args: str, settings: str = GREEDY) -> pytest.RunResult:
        profile = pytester.path / "thresholds" / "acc.toml"
        profile.write_text(PROFILE_HEAD + tables + settings, encoding="utf-8")
        return pytester.runpytest(
            "--base-url", engine.base_url, "--hw", "acc", "--dsbench-thresholds", "thresholds",
            "--dsbench-datasets", "data", "--dsbench-eval-python", eval_python,
            "--dsbench-storage", "history", "-p", "no:cacheprovider", *args)

    return run


def correct_count(engine: FakeEngineThread) -> int:
    """How many questions the fake answers correctly, asked directly (the oracle the verdict must match)."""
    correct = 0
    with httpx.Client(base_url=engine.base_url, timeout=10) as client:
        for question, answer in QUESTIONS:
            body = {"model": engine.config.model, "messages": [{"role": "user", "content": question}],
                    "temperature": 0, "max_tokens": 128}
            message = client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
            correct += (message.get("content") or "").strip() == answer
    return correct


def stored_accuracy(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    """The accuracy entries of every run stored in the history folder."""
    entries = []
    for path in sorted((pytester.path / "history").rglob("*.json")):
        for bench in json.loads(path.read_text(encoding="utf-8")).get("benchmarks", []):
            if bench.get("group") == "accuracy":
                entries.append(bench)
    return entries


def test_engine_answering_correctly_passes_and_the_score_is_stored_in_history(
        suite: Callable[..., pytest.RunResult], pytester: pytest.Pytester,
        make_fake_engine: Callable[..., FakeEngineThread]) -> None:
    engine = make_fake_engine(answers=ANSWERS)
    result = suite(engine, floor_table("arith", 1.0))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*accuracy (fraction)*1*>= 1*20*PASS*"])
    [entry] = stored_accuracy(pytester)
    assert (entry["stats"]["mean"], entry["stats"]["rounds"]) == (1.0, 20), "per-sample 0/1 scores are stored"
    assert entry["extra_info"]["dsbench"]["workload"]["dataset"] == "arith"
    kept = pytester.path / "dsbench-artifacts" / "accuracy" / "arith.samples.jsonl"
    assert len(kept.read_text(encoding="utf-8").splitlines()) == 20, "a passing run keeps its samples too"


def test_engine_wrong_on_a_fraction_fails_exactly_when_the_score_is_below_the_floor(
        suite: Callable[..., pytest.RunResult], pytester: pytest.Pytester,
        make_fake_engine: Callable[..., FakeEngineThread]) -> None:
    engine = make_fake_engine(answers=ANSWERS, wrong_fraction=0.3)
    k, n = correct_count(engine), len(QUESTIONS)
    assert 0 < k < n, f"the fake should get some but not all of the {n} questions right, got {k}"
    result = suite(engine, floor_table("at_floor", k / n) + floor_table("above_floor", (k + 1) / n))
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        f"accuracy = {k / n:.4g} fraction, limit >= {(k + 1) / n:g} fraction (*acc.toml accuracy.above_floor."
        f"floor); {n} samples; above_floor: score {k / n:.4f} < floor {(k + 1) / n:g} on {n} samples "
        f"(general_qa, exact_match); {n - k} wrong: #q* 'What is * plus *?': expected '*', got '*0'*; "
        "all samples: *samples.jsonl",
    ])
    result.stdout.fnmatch_lines(["FAILED *::test_accuracy_meets_floor[[]above_floor[]]*"])
    result.stdout.no_fnmatch_line("*Traceback*")
    [samples_file] = (pytester.path / "dsbench-artifacts").rglob("samples.jsonl")
    rows = [json.loads(line) for line in samples_file.read_text(encoding="utf-8").splitlines()]
    wrong = [r for r in rows if r["score"] == 0.0]
    assert len(rows) == n and len(wrong) == n - k, "every sample's output is kept for the failing data set"
    assert all(r["extracted"].strip() == r["target"] + "0" for r in wrong)


def test_reasoning_left_in_content_is_cut_at_the_think_tag(
        suite: Callable[..., pytest.RunResult], make_fake_engine: Callable[..., FakeEngineThread]) -> None:
    engine = make_fake_engine(answers=ANSWERS, faults=["no_reasoning_split"])
    suite(engine, floor_table("arith", 1.0)).assert_outcomes(passed=1)


def test_without_answer_after_think_reasoning_in_content_is_scored_and_fails(
        suite: Callable[..., pytest.RunResult], make_fake_engine: Callable[..., FakeEngineThread]) -> None:
    engine = make_fake_engine(answers=ANSWERS, faults=["no_reasoning_split"])
    result = suite(engine, floor_table("arith", 1.0), settings=GREEDY + "answer_after_think = false\n")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*score 0.0000 < floor 1*got 'Let me think step by step.</think>*"])


def test_stored_result_is_reused_until_the_cache_is_bypassed(
        suite: Callable[..., pytest.RunResult], make_fake_engine: Callable[..., FakeEngineThread]) -> None:
    engine = make_fake_engine(answers=ANSWERS)
    suite(engine, floor_table("arith", 1.0)).assert_outcomes(passed=1)
    served = engine.engine.requests_served
    assert served >= len(QUESTIONS)
    suite(engine, floor_table("arith", 0.5)).assert_outcomes(passed=1)
    assert engine.engine.requests_served == served, "same engine, model, data, limit and settings: reused"
    suite(engine, floor_table("arith", 1.0), "--dsbench-no-accuracy-cache").assert_outcomes(passed=1)
    assert engine.engine.requests_served == 2 * served


def test_missing_evalscope_fails_with_the_install_command(
        pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread], tmp_path: Path) -> None:
    python = tmp_path / "python-without-evalscope"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'raise SystemExit(1)'\n", encoding="utf-8")
    python.chmod(0o755)
    (pytester.path / "thresholds").mkdir()
    (pytester.path / "thresholds" / "acc.toml").write_text(PROFILE_HEAD + "[accuracy.gsm8k]\nfloor = 0.9\n",
                                                          encoding="utf-8")
    shutil.copy(SUITE, pytester.path / SUITE_COPY)
    engine = make_fake_engine(answers=ANSWERS)
    result = pytester.runpytest("--base-url", engine.base_url, "--hw", "acc", "--dsbench-thresholds",
                                "thresholds", "--dsbench-eval-python", str(python), "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["[[]accuracy.gsm8k[]] accuracy checks need EvalScope, which * cannot "
                                 "import; install it with pip install 'pytest-dsbench[[]eval[]]'*"])
    result.stdout.no_fnmatch_line("*Traceback*")


def test_profile_without_floors_skips_with_the_reason(
        pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread]) -> None:
    (pytester.path / "thresholds").mkdir()
    (pytester.path / "thresholds" / "acc.toml").write_text(PROFILE_HEAD, encoding="utf-8")
    shutil.copy(SUITE, pytester.path / SUITE_COPY)
    engine = make_fake_engine()
    result = pytester.runpytest("--base-url", engine.base_url, "--hw", "acc", "--dsbench-thresholds",
                                "thresholds", "-p", "no:cacheprovider", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*hw profile acc lists no [[]accuracy.[*][]] floors*"])


def test_engine_dying_during_the_run_fails_fast_with_the_reason(
        pytester: pytest.Pytester, eval_python: str, engine_shim: Callable[..., Path]) -> None:
    (pytester.path / "data").mkdir()
    (pytester.path / "data" / "arith.jsonl").write_text(
        "".join(json.dumps({"query": q, "response": a}) + "\n" for q, a in QUESTIONS), encoding="utf-8")
    (pytester.path / "thresholds").mkdir()
    (pytester.path / "thresholds" / "acc.toml").write_text(
        PROFILE_HEAD + floor_table("arith", 0.5) + GREEDY + "concurrency = 1\n", encoding="utf-8")
    shutil.copy(SUITE, pytester.path / SUITE_COPY)
    shim = engine_shim({"answers": ANSWERS, "die_after_requests": 5})
    result = pytester.runpytest("--engine-python", str(shim), "--model", "/m/x", "--hw", "acc",
                                "--dsbench-thresholds", "thresholds", "--dsbench-datasets", "data",
                                "--dsbench-eval-python", eval_python, "--dsbench-storage", "history",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["engine exited (code 3) during test *; remaining tests cannot run. Last lines of "
                                 "*engine-vllm.log:"])


def write_gsm8k_mirror(folder: Path) -> None:
    """A tiny local mirror of gsm8k in the Hugging Face layout EvalScope reads (config 'main', test/train)."""
    (folder / "main").mkdir(parents=True)
    test = [{"question": q, "answer": f"Add the numbers.\n#### {a}"} for q, a in QUESTIONS[:8]]
    train = [{"question": f"Tom has {i} apples and buys two more. How many now?",
              "answer": f"{i}+2\n#### {i + 2}"} for i in range(4)]
    for name, rows in (("test", test), ("train", train)):
        text = "".join(json.dumps(r) + "\n" for r in rows)
        (folder / "main" / f"{name}.jsonl").write_text(text, encoding="utf-8")
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: main\n  data_files:\n  - split: test\n    path: main/test.jsonl\n"
        "  - split: train\n    path: main/train.jsonl\n---\n", encoding="utf-8")


def test_builtin_benchmark_is_scored_offline_from_the_datasets_folder(
        pytester: pytest.Pytester, eval_python: str,
        make_fake_engine: Callable[..., FakeEngineThread]) -> None:
    write_gsm8k_mirror(pytester.path / "data" / "gsm8k")
    (pytester.path / "thresholds").mkdir()
    (pytester.path / "thresholds" / "acc.toml").write_text(
        PROFILE_HEAD + "[accuracy.gsm8k]\nfloor = 1.0\nlimit = 8\n" + GREEDY, encoding="utf-8")
    shutil.copy(SUITE, pytester.path / SUITE_COPY)
    engine = make_fake_engine()  # answers 'What is A plus B?' itself
    result = pytester.runpytest("--base-url", engine.base_url, "--hw", "acc", "--dsbench-thresholds",
                                "thresholds", "--dsbench-datasets", "data", "--dsbench-eval-python",
                                eval_python, "--dsbench-storage", "history", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*accuracy (fraction)*1*>= 1*8*PASS*"])


def test_api_key_reaches_the_engine_and_no_artifact(
        suite: Callable[..., pytest.RunResult], pytester: pytest.Pytester,
        make_fake_engine: Callable[..., FakeEngineThread]) -> None:
    engine = make_fake_engine(answers=ANSWERS, wrong_fraction=0.3, api_key="sk-accuracy-secret-42")
    result = suite(engine, floor_table("arith", 1.0), "--api-key", "sk-accuracy-secret-42")
    result.assert_outcomes(failed=1)  # a failing floor keeps the per-test artifacts to search
    result.stdout.fnmatch_lines(["*arith: score 0.* < floor 1 on 20 samples*"])
    files = [p for p in (pytester.path / "dsbench-artifacts").rglob("*") if p.is_file()]
    assert any(p.name == "evalscope.log" for p in files)
    leaked = [p for p in files if "sk-accuracy-secret-42" in p.read_text(encoding="utf-8", errors="replace")]
    assert leaked == [], f"API key written to {leaked}"
    assert "sk-accuracy-secret-42" not in result.stdout.str()
