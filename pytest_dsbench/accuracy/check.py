"""The accuracy gate: score a data set (or reuse the stored score), record it, and fail below the floor.

The result is recorded through ``dsbench_gate`` like every performance result (metric ``accuracy``, 0/1
per sample as samples, the floor as limit), so the history, the comparison against stored runs and the report
treat accuracy and performance alike. A failure says score vs floor, the sample count, a few failing samples
and where every sample's output is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pytest_dsbench import _atomic
from pytest_dsbench.accuracy import cache
from pytest_dsbench.accuracy.runner import AccuracyOutcome, eval_python, probe_evalscope, run_evalscope
from pytest_dsbench.accuracy.task import AccuracyTask, build_task
from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.gate import Gate
from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.thresholds import HardwareProfile

SAMPLES_FILE = "samples.jsonl"
FAILING_SHOWN = 3


def write_samples(path: Path, outcome: AccuracyOutcome) -> Path:
    """Every sample's question, reference, raw output, extracted answer and score, one JSON line each."""
    lines = [json.dumps(sample, ensure_ascii=False, default=str) for sample in outcome.samples]
    _atomic.write_text(path, "\n".join(lines) + "\n")
    return path


def evaluate(dataset: str, *, engine: EngineInfo, profile: HardwareProfile, options: DsbenchOptions,
             folder: Path) -> tuple[AccuracyTask, AccuracyOutcome]:
    """Score ``dataset`` on ``engine`` (from the cache when the key matches); samples go to ``folder``."""
    task = build_task(profile, dataset, engine, options.datasets_dir)
    python = eval_python(options.eval_python)
    version = probe_evalscope(python)
    key = task.cache_key(engine, version)
    artifacts_dir = options.artifacts_dir
    outcome = cache.load(artifacts_dir, key) if options.accuracy_cache else None
    if outcome is None:
        outcome = run_evalscope(task, engine, python=python, evalscope_version=version,
                                request_timeout_s=options.request_timeout_s,
                                eval_timeout_s=options.eval_timeout_s, folder=folder)
        outcome.key = key
        cache.store(artifacts_dir, outcome)
    write_samples(folder / SAMPLES_FILE, outcome)
    write_samples(samples_record_path(artifacts_dir, dataset), outcome)  # kept when the test passes too
    return task, outcome


def samples_record_path(artifacts_dir: Path, dataset: str) -> Path:
    """Where every run's per-sample outputs stay (the per-test folder is removed when the test passes)."""
    return artifacts_dir / "accuracy" / f"{dataset}.samples.jsonl"


def _clip(text: Any, width: int) -> str:
    value = " ".join(str(text).split()) if text is not None else ""
    return value if len(value) <= width else value[: width - 3] + "..."


def _clip_middle(text: Any, width: int) -> str:
    """Keep both ends: a few-shot prompt starts with examples and ends with the question asked."""
    value = " ".join(str(text).split()) if text is not None else ""
    if len(value) <= width:
        return value
    head = width // 3
    return value[:head] + " ... " + value[-(width - head - 5):]


def describe_sample(sample: dict[str, Any]) -> str:
    """One failing sample in a line: id, question, expected answer and what the engine answered."""
    label = sample.get("id") if sample.get("id") is not None else sample.get("index")
    if sample.get("error"):
        got = f"error: {_clip(sample['error'], 80)}"
    else:
        answer = _clip(sample.get("extracted"), 60)
        got = f"got {answer!r}" if answer else "got nothing (no answer after the reasoning?)"
    question = _clip_middle(sample.get("question"), 90)
    return f"#{label} {question!r}: expected {_clip(sample.get('target'), 40)!r}, {got}"


def failure_detail(task: AccuracyTask, outcome: AccuracyOutcome, samples_path: Path) -> str:
    """What a failing accuracy check prints after the gate's 'score vs floor' line."""
    failing = outcome.failing
    errors = len(outcome.errored)
    shown = "; ".join(describe_sample(s) for s in failing[:FAILING_SHOWN])
    error_note = f", {errors} of them request/scoring errors" if errors else ""
    cached = " (stored result; --dsbench-no-accuracy-cache reruns)" if outcome.cached else ""
    return (
        f"{task.dataset}: score {outcome.score:.4f} < floor {task.floor:g} on {len(outcome.samples)} samples "
        f"({task.benchmark}, {outcome.metric}){cached}; {len(failing)} wrong{error_note}: {shown}; "
        f"all samples: {samples_path}"
    )


def record_and_check(gate: Gate, task: AccuracyTask, outcome: AccuracyOutcome, samples_path: Path) -> None:
    """Record the score with its floor in the gate and fail the test when it is below the floor."""
    result = gate.record(
        "accuracy", outcome.score, samples=outcome.scores, limit=task.floor, limit_source=task.floor_source,
        workload=task.workload(),
    )
    result.extra.update({
        "dataset": task.dataset, "benchmark": task.benchmark, "score_metric": outcome.metric,
        "evalscope_version": outcome.evalscope_version, "cached": outcome.cached, "cache_key": outcome.key,
        "errored_samples": len(outcome.errored), "data": task.data.description,
        "eval_duration_s": outcome.duration_s,
    })
    if result.passed is False:
        gate.fail(failure_detail(task, outcome, samples_path))
    gate.check()
