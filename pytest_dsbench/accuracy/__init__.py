"""Accuracy floors through EvalScope (seed 004): every data set a hardware profile lists must score at least
its floor on the engine under test.

- ``task``: what one run is (data set, EvalScope benchmark, limit, floor, settings).
- ``datasets``: where the data comes from (local folder, bundled, EvalScope's download).
- ``runner``: EvalScope in its own interpreter against the engine's OpenAI endpoint.
- ``cache``: stored results keyed by engine, model, data, limit and settings.
- ``check``: record the score in the gate (history, report) and fail below the floor.

EvalScope is imported only by ``_evalscope_child.py``, in the interpreter ``--dsbench-eval-python`` names.
"""

from __future__ import annotations

from pytest_dsbench.accuracy.check import evaluate, failure_detail, record_and_check
from pytest_dsbench.accuracy.errors import AccuracyError
from pytest_dsbench.accuracy.runner import AccuracyOutcome
from pytest_dsbench.accuracy.task import AccuracyTask, GenerationSettings, build_task

__all__ = [
    "AccuracyError",
    "AccuracyOutcome",
    "AccuracyTask",
    "GenerationSettings",
    "build_task",
    "evaluate",
    "failure_detail",
    "record_and_check",
]
