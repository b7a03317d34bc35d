"""Self-tests of the accuracy gate's parts that need no EvalScope: tasks from the hardware profile, data
lookup, the cache key, the EvalScope configuration and environment, the cache, and the failure message.

The end-to-end checks (the real EvalScope against fake engines) are in ``test_accuracy_evalscope.py``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_dsbench.accuracy import cache
from pytest_dsbench.accuracy.check import failure_detail, record_and_check
from pytest_dsbench.accuracy.datasets import resolve_data, validate_qa_file
from pytest_dsbench.accuracy.errors import AccuracyError
from pytest_dsbench.accuracy.runner import (
    API_KEY_ENV,
    OFFLINE_ENV,
    AccuracyOutcome,
    child_env,
    eval_python,
    probe_evalscope,
    task_config,
)
from pytest_dsbench.accuracy.task import PROMPT_RESERVE_TOKENS, AccuracyTask, build_task, clamp_max_tokens
from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.engines.vllm.behaviour import BEHAVIOUR as VLLM_BEHAVIOUR
from pytest_dsbench.errors import ThresholdsError
from pytest_dsbench.gate import Gate
from pytest_dsbench.results import RunResults
from pytest_dsbench.thresholds import HardwareProfile, load

PROFILE_HEAD = """schema_version = 1
[hardware]
name = "toy"
accelerator = "none"
devices = 1
memory_gib_per_device = 1
[deployment]
max_model_len = 4096
max_input_len = 2048
max_concurrency = 3
"""


def make_profile(tmp_path: Path, body: str, name: str = "toy") -> HardwareProfile:
    """A hardware profile made of the common head plus ``body`` (accuracy tables and settings)."""
    folder = tmp_path / "thresholds"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.toml").write_text(PROFILE_HEAD + body, encoding="utf-8")
    return load(name, folder)


def write_qa(folder: Path, name: str, items: list[tuple[str, str]]) -> Path:
    """A general_qa file ``folder/name.jsonl``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.jsonl"
    lines = [json.dumps({"query": q, "response": a}) + "\n" for q, a in items]
    path.write_text("".join(lines), encoding="utf-8")
    return path


def engine(**fields: Any) -> EngineInfo:
    """An engine as the fixtures describe it."""
    values: dict[str, Any] = {
        "name": "vllm", "version": "0.32.0", "base_url": "http://127.0.0.1:8000", "model": "tiny-r1",
        "model_path": "/m/tiny-r1", "tokenizer_path": None, "max_model_len": 4096, "behaviour": VLLM_BEHAVIOUR,
        "mode": "attach",
    }
    values.update(fields)
    return EngineInfo(**values)


QA = [("What is 1+2?", "3"), ("What is 3+4?", "7")]
TOY = '[accuracy.toy]\nfloor = 0.9\nlimit = 2\nbenchmark = "general_qa"\n'


@pytest.fixture
def toy(tmp_path: Path) -> tuple[HardwareProfile, Path]:
    """A profile with one local QA set and the folder holding it."""
    data = tmp_path / "data"
    write_qa(data, "toy", QA)
    return make_profile(tmp_path, TOY), data


def outcome(scores: list[float | None], **fields: Any) -> AccuracyOutcome:
    """An outcome whose samples have these scores (None = the request failed)."""
    samples = [{"index": i, "id": f"q{i}", "question": f"What is {i}+1?", "target": str(i + 1),
                "extracted": str(i + 1) if s == 1 else "wrong", "score": s,
                "error": "HTTP 500" if s is None else None} for i, s in enumerate(scores)]
    values: dict[str, Any] = {"dataset": "toy", "benchmark": "general_qa", "metric": "exact_match",
                              "score": sum(s or 0 for s in scores) / len(scores), "samples": samples,
                              "evalscope_version": "1.14.1", "duration_s": 1.0, "key": "k1"}
    values.update(fields)
    return AccuracyOutcome(**values)


# -- tasks from the hardware profile -------------------------------------------------------------------------
def test_task_takes_floor_limit_and_settings_from_the_profile(toy: tuple[HardwareProfile, Path]) -> None:
    profile, data = toy
    task = build_task(profile, "toy", engine(), data)
    assert (task.floor, task.limit, task.subset, task.benchmark) == (0.9, 2, "toy", "general_qa")
    assert task.floor_source.endswith("toy.toml accuracy.toy.floor")
    assert (task.settings.temperature, task.settings.top_p) == (0.6, 0.95), "DeepSeek-R1's recommendation"
    assert task.settings.answer_after_think is True
    assert task.concurrency == 3, "deployment.max_concurrency when the profile sets no accuracy concurrency"


def test_per_engine_floor_override_applies_only_to_that_engine(tmp_path: Path) -> None:
    write_qa(tmp_path / "data", "toy", QA)
    profile = make_profile(tmp_path, TOY + "engines = { sglang = 0.5 }\n")
    sglang = build_task(profile, "toy", engine(name="sglang"), tmp_path / "data")
    vllm = build_task(profile, "toy", engine(), tmp_path / "data")
    assert (sglang.floor, vllm.floor) == (0.5, 0.9)
    assert sglang.floor_source.endswith("accuracy.toy.engines.sglang")


def test_profile_settings_and_dataset_max_tokens_override_the_defaults(tmp_path: Path) -> None:
    write_qa(tmp_path / "data", "toy", QA)
    profile = make_profile(tmp_path, TOY + "max_tokens = 100\n[accuracy_settings]\ntemperature = 0.0\n"
                           "top_p = 1.0\nmax_tokens = 300\nanswer_after_think = false\nseed = 7\n"
                           "concurrency = 2\n")
    task = build_task(profile, "toy", engine(), tmp_path / "data")
    expected = {"temperature": 0.0, "top_p": 1.0, "max_tokens": 100, "seed": 7}
    assert task.settings.generation_config() == expected
    assert (task.settings.answer_after_think, task.concurrency) == (False, 2)


def test_unknown_accuracy_key_is_a_one_line_profile_error(tmp_path: Path) -> None:
    with pytest.raises(ThresholdsError, match=r"key 'accuracy.toy.flor': unknown key"):
        make_profile(tmp_path, '[accuracy.toy]\nfloor = 0.9\nflor = 0.8\n')


def test_max_tokens_is_clamped_to_leave_room_for_the_prompt() -> None:
    assert clamp_max_tokens(32768, 131072) == 32768
    assert clamp_max_tokens(32768, 32768) == 32768 - PROMPT_RESERVE_TOKENS
    assert clamp_max_tokens(256, 2048) == 256
    assert clamp_max_tokens(4096, 2048) == 1024, "half the context when the reserve does not fit"
    assert clamp_max_tokens(32768, None) == 32768


# -- where the data comes from -------------------------------------------------------------------------------
def test_local_qa_set_is_found_in_the_datasets_folder_and_read_offline(toy: tuple[HardwareProfile, Path]) -> None:
    _, data = toy
    source = resolve_data("toy", "general_qa", "toy", data, local_qa=True)
    assert source.local_path == data.resolve() and source.offline
    assert source.fingerprint.startswith("jsonl:")


def test_missing_local_qa_set_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(AccuracyError, match=r"accuracy data set 'toy' not found: no nope.jsonl in .*"
                                            r"Pass --dsbench-datasets DIR"):
        resolve_data("toy", "general_qa", "nope", tmp_path, local_qa=True)


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", r"toy.jsonl:2: not a JSON object"),
    ('{"query": "q"}', r"toy.jsonl:2: needs a 'query' \(or 'question'\) and a 'response'"),
])
def test_malformed_qa_line_is_named_by_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "toy.jsonl"
    path.write_text('{"query": "q", "response": "a"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(AccuracyError, match=message):
        validate_qa_file(path)


def test_builtin_benchmark_without_datasets_folder_is_downloaded_by_evalscope() -> None:
    source = resolve_data("gsm8k", "gsm8k", None, None, local_qa=False)
    assert source.local_path is None and not source.offline
    assert source.fingerprint == "evalscope-download:gsm8k"


def test_builtin_benchmark_missing_from_datasets_folder_is_an_error_not_a_download(tmp_path: Path) -> None:
    with pytest.raises(AccuracyError, match=r"--dsbench-datasets .* has no folder 'gsm8k'.*drop --dsbench"):
        resolve_data("gsm8k", "gsm8k", None, tmp_path, local_qa=False)


def test_builtin_benchmark_folder_is_used_offline(tmp_path: Path) -> None:
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text('{"question": "q", "answer": "1"}\n', encoding="utf-8")
    source = resolve_data("gsm8k", "gsm8k", None, tmp_path, local_qa=False)
    assert source.local_path == (tmp_path / "gsm8k").resolve() and source.offline


# -- the cache key -------------------------------------------------------------------------------------------
def test_cache_key_is_stable_for_the_same_run(toy: tuple[HardwareProfile, Path]) -> None:
    profile, data = toy
    first = build_task(profile, "toy", engine(), data).cache_key(engine(), "1.14.1")
    second = build_task(profile, "toy", engine(), data).cache_key(engine(), "1.14.1")
    assert first == second


@pytest.mark.parametrize("change", ["engine_version", "model", "limit", "temperature", "evalscope", "data"])
def test_cache_key_changes_with_anything_that_can_change_the_score(toy: tuple[HardwareProfile, Path],
                                                                   change: str) -> None:
    profile, data = toy
    task = build_task(profile, "toy", engine(), data)
    base = task.cache_key(engine(), "1.14.1")
    eng, version = engine(), "1.14.1"
    if change == "engine_version":
        eng = engine(version="0.33.0")
    elif change == "model":
        eng = engine(model="other")
    elif change == "limit":
        task = replace(task, limit=3)
    elif change == "temperature":
        task = replace(task, settings=replace(task.settings, temperature=0.0))
    elif change == "evalscope":
        version = "1.15.0"
    else:
        write_qa(data, "toy", [*QA, ("What is 9+9?", "18")])
        task = build_task(profile, "toy", engine(), data)
    assert task.cache_key(eng, version) != base


def test_floor_is_not_part_of_the_cache_key(tmp_path: Path, toy: tuple[HardwareProfile, Path]) -> None:
    profile, data = toy
    task = build_task(profile, "toy", engine(), data)
    assert replace(task, floor=0.1).cache_key(engine(), "1") == task.cache_key(engine(), "1")


# -- what EvalScope is asked to do ---------------------------------------------------------------------------
def test_evalscope_config_scores_the_answer_after_think_with_exact_match(toy: tuple[HardwareProfile, Path],
                                                                         tmp_path: Path) -> None:
    profile, data = toy
    task = build_task(profile, "toy", engine(), data)
    config = task_config(task, engine(api_key="sk-secret"), tmp_path, 30.0)
    assert config["eval_type"] == "openai_api" and config["api_url"] == "http://127.0.0.1:8000/v1"
    assert config["datasets"] == ["dsbench_qa"], "general_qa scores BLEU/ROUGE; dsbench_qa scores exact match"
    assert config["dataset_args"]["dsbench_qa"] == {
        "local_path": str(data.resolve()), "subset_list": ["toy"], "filters": {"remove_until": "</think>"}}
    assert config["limit"] == 2 and config["eval_batch_size"] == 3 and config["timeout"] == 30.0
    assert "sk-secret" not in json.dumps(config), "the API key is never written into the request file"


def test_answer_after_think_off_sends_no_think_filter(tmp_path: Path) -> None:
    write_qa(tmp_path / "data", "toy", QA)
    profile = make_profile(tmp_path, TOY + "[accuracy_settings]\nanswer_after_think = false\n")
    config = task_config(build_task(profile, "toy", engine(), tmp_path / "data"), engine(), tmp_path, 30.0)
    assert "filters" not in config["dataset_args"]["dsbench_qa"]


def test_child_environment_is_offline_for_local_data_and_carries_the_key_only_in_one_variable(
        toy: tuple[HardwareProfile, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "corp.example")
    profile, data = toy
    env = child_env(build_task(profile, "toy", engine(), data), engine(api_key="sk-secret"))
    assert all(env[k] == v for k, v in OFFLINE_ENV.items())
    assert env[API_KEY_ENV] == "sk-secret"
    assert env["NO_PROXY"].split(",")[:2] == ["corp.example", "127.0.0.1"], "the engine is never proxied"


def test_child_environment_allows_downloads_when_evalscope_fetches_the_data(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    profile = make_profile(tmp_path, "[accuracy.gsm8k]\nfloor = 0.9\n")
    env = child_env(build_task(profile, "gsm8k", engine(), None), engine())
    assert "HF_HUB_OFFLINE" not in env and API_KEY_ENV not in env


def test_missing_eval_interpreter_is_a_one_line_error_with_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(AccuracyError, match=r"--dsbench-eval-python .*nope: no executable interpreter there; "
                                            r"install it with pip install 'pytest-dsbench\[eval\]'"):
        eval_python(str(tmp_path / "nope"))


def test_interpreter_without_evalscope_is_a_one_line_error_with_the_install_command(tmp_path: Path) -> None:
    python = tmp_path / "python-without-evalscope"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'raise SystemExit(1)'\n", encoding="utf-8")
    python.chmod(0o755)
    with pytest.raises(AccuracyError, match=r"accuracy checks need EvalScope, which .* cannot import"):
        probe_evalscope(str(python))


# -- cache ---------------------------------------------------------------------------------------------------
def test_stored_result_is_returned_only_for_its_key(tmp_path: Path) -> None:
    cache.store(tmp_path, outcome([1.0, 0.0], key="abc"))
    hit = cache.load(tmp_path, "abc")
    assert hit is not None and hit.cached and hit.scores == [1.0, 0.0]
    assert cache.load(tmp_path, "other") is None


def test_unreadable_cache_entry_is_ignored(tmp_path: Path) -> None:
    path = cache.cache_path(tmp_path, "abc")
    path.parent.mkdir(parents=True)
    path.write_text("{torn", encoding="utf-8")
    assert cache.load(tmp_path, "abc") is None


# -- verdict -------------------------------------------------------------------------------------------------
def test_failure_names_score_floor_sample_count_and_failing_samples(toy: tuple[HardwareProfile, Path],
                                                                    tmp_path: Path) -> None:
    profile, data = toy
    task = build_task(profile, "toy", engine(), data)
    text = failure_detail(task, outcome([1.0, 0.0, None, 0.0, 0.0, 1.0]), tmp_path / "samples.jsonl")
    assert "toy: score 0.3333 < floor 0.9 on 6 samples (general_qa, exact_match)" in text
    assert "4 wrong, 1 of them request/scoring errors" in text
    assert "#q1 'What is 1+1?': expected '2', got 'wrong'" in text
    assert "#q2 'What is 2+1?': expected '3', error: HTTP 500" in text
    assert text.count("#q") == 3, "only a few failing samples; the rest are in the samples file"
    assert str(tmp_path / "samples.jsonl") in text


def test_score_below_floor_fails_the_gate_and_at_the_floor_passes(toy: tuple[HardwareProfile, Path],
                                                                  tmp_path: Path) -> None:
    profile, data = toy
    task: AccuracyTask = replace(build_task(profile, "toy", engine(), data), floor=0.5)
    passing = Gate(test_id="t", results=RunResults())
    record_and_check(passing, task, outcome([1.0, 0.0]), tmp_path / "s.jsonl")
    assert passing.recorded[0].passed is True and passing.samples["accuracy"] == [1.0, 0.0]
    failing = Gate(test_id="t", results=RunResults())
    expected = r"accuracy = 0.3333 fraction, limit >= 0.5 .*; 3 samples; toy: score 0.3333 < floor 0.5"
    with pytest.raises(pytest.fail.Exception, match=expected):
        record_and_check(failing, task, outcome([1.0, 0.0, 0.0]), tmp_path / "s.jsonl")


def test_recorded_result_carries_workload_for_history(toy: tuple[HardwareProfile, Path], tmp_path: Path) -> None:
    profile, data = toy
    task = build_task(profile, "toy", engine(), data)
    gate = Gate(test_id="t", results=RunResults())
    with pytest.raises(pytest.fail.Exception):
        record_and_check(gate, task, outcome([0.0, 0.0]), tmp_path / "s.jsonl")
    workload = gate.recorded[0].extra["workload"]
    assert workload["dataset"] == "toy" and workload["limit"] == 2 and workload["temperature"] == 0.6
    assert gate.recorded[0].extra["cached"] is False
