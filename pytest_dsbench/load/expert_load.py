"""Per-rank and per-expert load during one load run, from the suite's EPLB routing counter.

Why: seed 000's throughput numbers are only comparable when one knows how balanced the experts were. When the
suite launched the engine with ``--eplb observe|reference|balanced``, the engine-side patch keeps a
``[layer, expert]`` histogram (:mod:`pytest_dsbench.eplb.counts`); the load during a run is the histogram after
it minus the one before it (so the engine's warm-up and earlier tests do not count). Without a counter the
engine exposes no routing and the run reports no load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_dsbench._atomic import write_json
from pytest_dsbench.eplb.counts import CountsReport, load_summary, read_counts, wait_for_quiet_counts


def _read_or_none(path: Path) -> CountsReport | None:
    try:
        return read_counts(path)
    except (FileNotFoundError, ValueError, json.JSONDecodeError):
        return None


@dataclass
class ExpertLoadProbe:
    """Snapshot the counter at :meth:`start`; :meth:`finish` returns the load summary of what was routed since."""

    counts_path: Path
    settle_s: float = 1.0
    timeout_s: float = 15.0
    _before: CountsReport | None = field(default=None, init=False, repr=False)

    def start(self) -> ExpertLoadProbe:
        self._before = _read_or_none(self.counts_path)
        return self

    def finish(self) -> dict[str, Any] | None:
        """The load summary of the slots routed since :meth:`start`, or None when nothing was routed."""
        try:
            after = wait_for_quiet_counts(self.counts_path, self.settle_s, self.timeout_s)
        except (FileNotFoundError, ValueError, json.JSONDecodeError):
            return None
        delta = after.minus(self._before)
        if delta.total_slots <= 0:
            return None
        return {**load_summary(delta), "routed_slots": delta.total_slots}


def save(summary: dict[str, Any], results_dir: Path, name: str) -> Path:
    """Write the summary next to the run's raw records (atomically)."""
    path = results_dir / f"{name}.expert-load.json"
    write_json(path, summary)
    return path
