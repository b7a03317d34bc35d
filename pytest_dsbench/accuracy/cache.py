"""Stored accuracy results, keyed by everything that can change a score.

An EvalScope run over hundreds of reasoning samples takes minutes to hours; a rerun of the suite against the
same engine build, model, data, sample limit and settings reuses the stored result (per-sample outputs
included).
``--dsbench-no-accuracy-cache`` always reruns. Entries live in ``<artifacts>/accuracy-cache/<key>.json`` and
are written atomically; an unreadable entry is ignored, never trusted.
"""

from __future__ import annotations

import json
from pathlib import Path

from pytest_dsbench import _atomic
from pytest_dsbench.accuracy.runner import AccuracyOutcome

CACHE_DIRNAME = "accuracy-cache"


def cache_path(artifacts_dir: Path, key: str) -> Path:
    """Where the result with ``key`` is stored."""
    return artifacts_dir / CACHE_DIRNAME / f"{key}.json"


def load(artifacts_dir: Path, key: str) -> AccuracyOutcome | None:
    """The stored result for ``key``, or None when there is none (or it cannot be read)."""
    path = cache_path(artifacts_dir, key)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        outcome = AccuracyOutcome.from_dict(data)
    except (OSError, ValueError, TypeError):
        return None
    if outcome.key != key or not outcome.samples:
        return None
    outcome.cached = True
    return outcome


def store(artifacts_dir: Path, outcome: AccuracyOutcome) -> Path:
    """Store ``outcome`` under its key."""
    path = cache_path(artifacts_dir, outcome.key)
    data = outcome.as_dict()
    data["cached"] = False
    _atomic.write_json(path, data)
    return path
