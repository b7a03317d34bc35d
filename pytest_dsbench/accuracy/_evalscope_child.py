"""Runs one EvalScope evaluation in EvalScope's own interpreter and writes a small, stable result file.

Usage (by :mod:`pytest_dsbench.accuracy.runner`, never by hand)::

    EVAL_PYTHON _evalscope_child.py REQUEST.json

This file is executed by path with whatever interpreter has EvalScope installed (often a venv of its own,
since EvalScope's pins differ from vLLM's), so it imports only the standard library and EvalScope, never
``pytest_dsbench``. The request holds ``TaskConfig`` keyword arguments (without the API key, which comes in
the environment variable ``DSBENCH_EVAL_API_KEY`` so it is never written to disk) and where to write the
result.

For local question/answer sets (EvalScope's ``general_qa`` layout: ``NAME.jsonl`` of ``{"query", "response"}``
lines) it registers the benchmark ``dsbench_qa``: ``general_qa``'s loader with the bare question as the prompt
and EvalScope's ``exact_match`` metric, because ``general_qa`` itself only scores BLEU/ROUGE, which cannot
gate.

The result file (protocol 1)::

    {"protocol": 1, "evalscope_version": "...", "benchmark": "...", "metric": "...", "score": 0.97,
     "report_score": 0.97, "execution": {"requested": 64, "succeeded": 64, "errored": 0},
     "samples": [{"index", "id", "subset", "question", "target", "prediction", "extracted", "score",
                  "error"}...], "duration_s": 12.3}

or ``{"protocol": 1, "error": "one line"}`` with exit status 2 when the evaluation could not run.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
import traceback
from typing import Any

# Run by path, Python puts this folder first on sys.path, where datasets.py would shadow Hugging Face's
# ``datasets`` (and errors.py, task.py ... other top-level names) inside EvalScope. Take it out.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

PROTOCOL = 1
EXACT_MATCH_QA = "dsbench_qa"
API_KEY_ENV = "DSBENCH_EVAL_API_KEY"


def _register_exact_match_qa() -> None:
    """Register ``dsbench_qa``: general_qa's local loader, prompt = the question, metric = exact_match."""
    from evalscope.api.benchmark import BenchmarkMeta, DefaultDataAdapter
    from evalscope.api.dataset import Sample
    from evalscope.api.messages import ChatMessageSystem, ChatMessageUser
    from evalscope.api.registry import BENCHMARK_REGISTRY, register_benchmark
    from evalscope.benchmarks.general_qa.general_qa_adapter import GeneralQAAdapter

    if EXACT_MATCH_QA in BENCHMARK_REGISTRY:
        return

    class DsbenchQAAdapter(GeneralQAAdapter):  # type: ignore[misc]
        """general_qa data, scored by EvalScope's generic metric path (exact_match) instead of BLEU/ROUGE."""

        def record_to_sample(self, record: dict[str, Any]) -> Any:
            query = record.get("question") or record.get("query")
            answer = record.get("answer") or record.get("response")
            messages: list[Any] = []
            if record.get("system"):
                messages.append(ChatMessageSystem(content=record["system"]))
            messages.append(ChatMessageUser(content=query))
            metadata = {"id": str(record["id"])} if record.get("id") is not None else {}
            return Sample(input=messages, target=str(answer if answer is not None else ""), metadata=metadata)

        def match_score(self, original_prediction: str, filtered_prediction: str, reference: str,
                        task_state: Any) -> Any:
            return DefaultDataAdapter.match_score(self, original_prediction, filtered_prediction, reference,
                                                  task_state)

    register_benchmark(BenchmarkMeta(
        name=EXACT_MATCH_QA,
        pretty_name="dsbench exact-match QA",
        description="Local general_qa-format data scored by exact match (pytest-dsbench).",
        dataset_id="general_qa",
        metric_list=["exact_match"],
        few_shot_num=0,
        train_split=None,
        eval_split="test",
        prompt_template="{question}",
    ))(DsbenchQAAdapter)


def _question(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content)
    return ""


def _sample_rows(work_dir: str, benchmark: str) -> list[dict[str, Any]]:
    """Per-sample rows from EvalScope's review files (``reviews/<model>/<benchmark>_<subset>.jsonl``)."""
    rows: list[dict[str, Any]] = []
    for path in sorted(glob.glob(os.path.join(work_dir, "reviews", "**", "*.jsonl"), recursive=True)):
        subset = os.path.basename(path)[: -len(".jsonl")].removeprefix(f"{benchmark}_")
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                review = json.loads(line)
                sample_score = review.get("sample_score") or {}
                score = sample_score.get("score") or {}
                values = score.get("value") or {}
                main = score.get("main_score_name") or next(iter(values), None)
                value = values.get(main) if main else None
                metadata = sample_score.get("sample_metadata") or {}
                target = review.get("target")
                rows.append({
                    "index": review.get("index"),
                    "id": metadata.get("id"),
                    "subset": subset,
                    "question": _question(review.get("messages") or []),
                    "target": target[0] if isinstance(target, list) and len(target) == 1 else target,
                    "prediction": score.get("prediction"),
                    "extracted": score.get("extracted_prediction"),
                    "score": float(value) if isinstance(value, int | float) else None,
                    "metric": main,
                    "error": review.get("error") or (None if value is not None else f"no {main} score"),
                })
    return rows


def _report(work_dir: str) -> tuple[float | None, str | None, dict[str, Any]]:
    """The primary metric's score and name, and the execution summary, from EvalScope's report file."""
    for path in sorted(glob.glob(os.path.join(work_dir, "reports", "**", "*.json"), recursive=True)):
        with open(path, encoding="utf-8") as handle:
            report = json.load(handle)
        primary = report.get("primary_metric_identity")
        metrics = report.get("metrics") or []
        chosen = next((m for m in metrics if m.get("identity") == primary), metrics[0] if metrics else None)
        execution = report.get("execution_summary") or {}
        summary = {k: execution.get(k) for k in ("requested", "succeeded", "errored")}
        if chosen is None:
            return None, None, summary
        return float(chosen["score"]), str(chosen["identity"]["name"]), summary
    return None, None, {}


def run(request: dict[str, Any]) -> dict[str, Any]:
    """Run the evaluation described by ``request`` and return the result document."""
    import evalscope
    from evalscope import TaskConfig, run_task

    task = dict(request["task"])
    if request.get("exact_match_qa"):
        _register_exact_match_qa()
    api_key = os.environ.get(API_KEY_ENV)
    if api_key:
        task["api_key"] = api_key
    started = time.monotonic()
    run_task(TaskConfig(**task))
    rows = sorted(_sample_rows(task["work_dir"], task["datasets"][0]),
                  key=lambda r: (r["subset"], r["index"] if isinstance(r["index"], int) else 0))
    report_score, metric, execution = _report(task["work_dir"])
    scored = [r["score"] for r in rows if r["score"] is not None]
    return {
        "protocol": PROTOCOL,
        "evalscope_version": getattr(evalscope, "__version__", "unknown"),
        "benchmark": task["datasets"][0],
        "metric": metric or (rows[0]["metric"] if rows else None),
        "score": sum(scored) / len(rows) if rows else None,
        "report_score": report_score,
        "execution": execution,
        "samples": rows,
        "duration_s": round(time.monotonic() - started, 3),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: _evalscope_child.py REQUEST.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        request = json.load(handle)
    result_path = request["result_path"]
    try:
        result = run(request)
        status = 0
    except BaseException as exc:  # reported as one line to the parent, the traceback stays in the log
        traceback.print_exc()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        result = {"protocol": PROTOCOL, "error": f"{type(exc).__name__}: {first}"[:500]}
        status = 2
    tmp = f"{result_path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1, default=str)
    os.replace(tmp, result_path)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
