"""Runs EvalScope against the engine's OpenAI endpoint, in EvalScope's own interpreter, and reads the result.

EvalScope's pins (huggingface_hub, fsspec, datasets, ...) differ from vLLM's, so it often lives in a venv of
its own: ``--dsbench-eval-python PATH`` names that interpreter (default: the one running pytest). Either way
it runs as a child process (``_evalscope_child.py``) with a wall-clock limit, its own process group, offline
environment variables when the data is local, and the API key passed only through the environment. The
child's log, its work folder (predictions, reviews, report) and the per-sample results land in the test's
artifacts folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pytest_dsbench import _atomic
from pytest_dsbench._http import redact
from pytest_dsbench.accuracy.errors import AccuracyError
from pytest_dsbench.accuracy.supervise import EngineWatch, run_child
from pytest_dsbench.accuracy.task import END_THINK, AccuracyTask
from pytest_dsbench.engines.base import EngineInfo

CHILD_SCRIPT = Path(__file__).with_name("_evalscope_child.py")
PROTOCOL = 1
EXACT_MATCH_QA = "dsbench_qa"
API_KEY_ENV = "DSBENCH_EVAL_API_KEY"
PROBE_TIMEOUT_S = 60.0
#: EvalScope's own retries of a failed request (its default, 5 tries 10 s apart, takes a minute per sample).
REQUEST_RETRIES = 2
RETRY_INTERVAL_S = 2
#: Set for local data: neither Hugging Face nor ModelScope may be asked for anything.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "MODELSCOPE_OFFLINE": "1", "DO_NOT_TRACK": "1"}
INSTALL_HINT = ("install it with pip install 'pytest-dsbench[eval]' (same environment), or in a venv of its "
                "own (python -m venv .venv-eval && .venv-eval/bin/pip install evalscope==1.14.1) and pass "
                "--dsbench-eval-python .venv-eval/bin/python")


@dataclass
class AccuracyOutcome:
    """The score of one data set and the per-sample evidence behind it."""

    dataset: str
    benchmark: str
    metric: str
    score: float
    samples: list[dict[str, Any]]
    evalscope_version: str
    duration_s: float
    execution: dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    key: str = ""

    @property
    def scores(self) -> list[float]:
        """Per-sample scores in sample order; a sample without a score (request error) counts as 0."""
        return [float(s["score"]) if isinstance(s.get("score"), int | float) else 0.0 for s in self.samples]

    @property
    def failing(self) -> list[dict[str, Any]]:
        """Samples that did not score full marks, worst first."""
        wrong = [s for s in self.samples if not (isinstance(s.get("score"), int | float) and s["score"] >= 1)]
        return sorted(wrong, key=lambda s: s.get("score") or 0.0)

    @property
    def errored(self) -> list[dict[str, Any]]:
        """Samples whose request or scoring failed."""
        return [s for s in self.samples if s.get("error")]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccuracyOutcome:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def eval_python(configured: str | None) -> str:
    """The interpreter that runs EvalScope: ``--dsbench-eval-python`` or the one running pytest."""
    if configured is None:
        return sys.executable
    path = Path(configured).expanduser().absolute()  # not resolve(): a venv's python is a symlink
    if not path.is_file() or not os.access(path, os.X_OK):
        raise AccuracyError(f"--dsbench-eval-python {configured}: no executable interpreter there; "
                            f"{INSTALL_HINT}.")
    return str(path)


def probe_evalscope(python: str) -> str:
    """EvalScope's version in ``python``, or an :class:`AccuracyError` that says how to install it."""
    code = "import importlib.metadata as m; print(m.version('evalscope'))"
    try:
        result = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                                check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AccuracyError(f"cannot run {python} to find EvalScope ({type(exc).__name__}); "
                            f"{INSTALL_HINT}.") from None
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise AccuracyError(f"accuracy checks need EvalScope, which {python} cannot import; {INSTALL_HINT}.")
    return lines[-1]


def _no_proxy(env: dict[str, str], base_url: str) -> None:
    host = urlparse(base_url).hostname or "127.0.0.1"
    for key in ("NO_PROXY", "no_proxy"):
        parts = [p for p in env.get(key, "").split(",") if p]
        env[key] = ",".join(dict.fromkeys([*parts, "127.0.0.1", "localhost", host]))


def child_env(task: AccuracyTask, engine: EngineInfo) -> dict[str, str]:
    """The child's environment: offline when the data is local, the engine never proxied, the key hidden."""
    env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    if task.data.offline:
        env.update(OFFLINE_ENV)
    _no_proxy(env, engine.base_url)
    if engine.api_key:
        env[API_KEY_ENV] = engine.api_key
    return env


def task_config(task: AccuracyTask, engine: EngineInfo, work_dir: Path,
                request_timeout_s: float) -> dict[str, Any]:
    """EvalScope ``TaskConfig`` keyword arguments (JSON) for ``task``; never the API key."""
    benchmark = EXACT_MATCH_QA if task.exact_match_qa else task.benchmark
    args: dict[str, Any] = {}
    if task.data.local_path is not None:
        args["local_path"] = str(task.data.local_path)
    if task.subset:
        args["subset_list"] = [task.subset]
    if task.settings.answer_after_think:
        args["filters"] = {"remove_until": END_THINK}
    config: dict[str, Any] = {
        "model": engine.model,
        "api_url": engine.base_url.rstrip("/") + "/v1",
        "eval_type": "openai_api",
        "datasets": [benchmark],
        "dataset_args": {benchmark: args},
        "generation_config": {**task.settings.generation_config(), "retries": REQUEST_RETRIES,
                              "retry_interval": RETRY_INTERVAL_S},
        "eval_batch_size": task.concurrency,
        "work_dir": str(work_dir),
        "no_timestamp": True,
        "timeout": request_timeout_s,
        "stream": False,
        "ignore_errors": True,
    }
    if task.limit is not None:
        config["limit"] = task.limit
    return config


def _log_tail(log_path: Path, lines: int = 400) -> str:
    """The last meaningful error line of the child's log, for a one-line failure message."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    for line in reversed(text):
        stripped = line.strip()
        if stripped and ("Error" in stripped or "error" in stripped) and not stripped.startswith("File "):
            return stripped[:300]
    return ""


def _redact_tree(folder: Path, secret: str | None) -> None:
    """Remove the API key from every text file EvalScope wrote (it masks it, this makes sure)."""
    if not secret:
        return
    for path in folder.rglob("*"):
        if path.is_file() and path.suffix in (".log", ".json", ".jsonl", ".yaml", ".txt", ".html"):
            text = path.read_text(encoding="utf-8", errors="replace")
            if secret in text:
                _atomic.write_text(path, redact(text, [secret]))


def _failure_reason(log_path: Path) -> str:
    """EvalScope's reason for the last sample it gave up on ("Processing item ... failed: <reason>")."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if "Processing item" in line and "failed:" in line:
            return line.split("failed:", 1)[1].strip().removesuffix("\x1b[0m")[:200]
    return ""


def _local_items(task: AccuracyTask) -> list[dict[str, Any]]:
    """The items of a local QA set in file order (EvalScope's sample index), for samples without a result."""
    if not task.exact_match_qa or task.data.local_path is None:
        return []
    path = task.data.local_path / f"{task.subset or task.dataset}.jsonl"
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError):
        return []


def missing_samples(task: AccuracyTask, samples: list[dict[str, Any]], requested: int,
                    reason: str) -> list[dict[str, Any]]:
    """Rows for the samples EvalScope gave up on (they are absent from its reviews); each scores 0."""
    seen = {s.get("index") for s in samples}
    items = _local_items(task)
    rows = []
    for index in range(requested):
        if index in seen:
            continue
        item = items[index] if index < len(items) else {}
        rows.append({
            "index": index, "id": item.get("id"), "subset": task.subset,
            "question": item.get("query") or item.get("question"),
            "target": item.get("response") if item.get("response") is not None else item.get("answer"),
            "prediction": None, "extracted": None, "score": None, "metric": None,
            "error": f"no answer: the request failed{': ' + reason if reason else ''} "
                     "(after EvalScope's retries)",
        })
    return rows


def run_evalscope(task: AccuracyTask, engine: EngineInfo, *, python: str, evalscope_version: str,
                  request_timeout_s: float, eval_timeout_s: float, folder: Path,
                  watch: EngineWatch | None = None) -> AccuracyOutcome:
    """Run EvalScope for ``task`` against ``engine``; files go to ``folder`` (the test's artifacts)."""
    folder = folder.absolute()
    folder.mkdir(parents=True, exist_ok=True)
    work_dir = folder / "evalscope"
    request_path = folder / "evalscope-request.json"
    result_path = folder / "evalscope-result.json"
    log_path = folder / "evalscope.log"
    result_path.unlink(missing_ok=True)
    _atomic.write_json(request_path, {
        "protocol": PROTOCOL, "task": task_config(task, engine, work_dir, request_timeout_s),
        "exact_match_qa": task.exact_match_qa, "result_path": str(result_path),
    })
    started = time.monotonic()
    try:
        status = run_child([python, str(CHILD_SCRIPT), str(request_path)], env=child_env(task, engine),
                           cwd=folder, log_path=log_path, timeout_s=eval_timeout_s,
                           watch=watch or EngineWatch(engine.base_url, engine.api_key), what=task.dataset)
    finally:
        _redact_tree(folder, engine.api_key)
    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        tail = _log_tail(log_path)
        raise AccuracyError(f"EvalScope exited with status {status} without a result for {task.dataset}"
                            f"{': ' + tail if tail else ''}; log: {log_path}") from None
    if result.get("error"):
        error = redact(str(result["error"]), [engine.api_key])
        raise AccuracyError(f"EvalScope failed on {task.dataset}: {error}; log: {log_path}")
    samples = list(result.get("samples") or [])
    execution = result.get("execution") or {}
    requested = execution.get("requested")
    if isinstance(requested, int) and requested > len(samples):
        samples += missing_samples(task, samples, requested, _failure_reason(log_path))
    if not samples:
        raise AccuracyError(f"EvalScope scored no samples of {task.dataset} ({task.data.description}); "
                            f"log: {log_path}")
    outcome = AccuracyOutcome(
        dataset=task.dataset, benchmark=task.benchmark, metric=str(result.get("metric") or "score"),
        score=0.0, samples=samples,
        evalscope_version=str(result.get("evalscope_version") or evalscope_version),
        duration_s=round(time.monotonic() - started, 3), execution=execution,
    )
    outcome.score = sum(outcome.scores) / len(samples)
    return outcome
