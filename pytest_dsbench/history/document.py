"""The stored run: pytest-benchmark's JSON format, one benchmark per (test, metric, workload), samples as
rounds.

Why pytest-benchmark's format: ``pytest-benchmark --storage <storage>/<engine>-<hw> list|compare`` keeps
working on our history (tables, CSV, histograms), and users already know the layout. Each recorded result is
one entry of ``benchmarks``:

* ``stats`` is computed by pytest-benchmark's own ``Stats`` over the raw per-request samples, which are kept
  in ``stats.data`` (the "replay timer" idea: every sample is one round). Millisecond metrics are stored in
  seconds so pytest-benchmark's tables show the right unit; ``extra_info.dsbench.scale`` says how to undo it.
  Non-time metrics (tok/s, accuracy) are stored as they are; their unit is in ``extra_info.dsbench.unit``.
* ``extra_info.dsbench`` holds what pytest-benchmark cannot: metric, unit, direction, the recorded value, the
  limit and verdict, the workload, the sample count and 95% interval, and the regression comparison.

The top level has pytest-benchmark's ``machine_info``, ``commit_info``, ``datetime`` and ``version``, plus a
``dsbench`` block: schema version, provenance, exit status, and whether the run was interrupted.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_dsbench import metrics
from pytest_dsbench.results import InvalidResult, MetricResult

SCHEMA = 1
TIMER_NAME = "dsbench.replay"


def machine_id() -> str:
    """pytest-benchmark's machine id (``Linux-CPython-3.11-64bit``), used as the storage sub-folder."""
    return "-".join(
        (
            platform.system(),
            platform.python_implementation(),
            ".".join(platform.python_version_tuple()[:2]),
            platform.architecture()[0],
        )
    )


def scale_for(unit: str) -> float:
    """Factor from the metric unit to what is stored in ``stats`` (seconds for time units)."""
    return {"ms": 1e-3, "s": 1.0, "us": 1e-6}.get(unit, 1.0)


def workload_key(workload: dict[str, Any]) -> str:
    """Canonical JSON of a workload, used to match results across runs."""
    return json.dumps(workload, sort_keys=True, default=str, separators=(",", ":"))


def workload_label(workload: dict[str, Any], width: int = 60) -> str:
    """A short ``k=v,k=v`` label of the scalar workload values, for benchmark names and tables."""
    parts = [f"{k}={v}" for k, v in sorted(workload.items()) if isinstance(v, str | int | float | bool)]
    label = ",".join(parts)
    return label if len(label) <= width else label[: width - 3] + "..."


def _stats(data: list[float]) -> dict[str, Any]:
    from pytest_benchmark.stats import Stats

    stats = Stats()  # type: ignore[no-untyped-call]
    for value in data:
        stats.update(value)  # type: ignore[no-untyped-call]
    out: dict[str, Any] = stats.as_dict()  # type: ignore[no-untyped-call]
    out["data"] = list(data)
    out["iterations"] = 1
    return out


def benchmark_entry(result: MetricResult, occurrence: int) -> dict[str, Any]:
    """One result as a pytest-benchmark ``benchmarks`` entry."""
    definition = metrics.METRICS.get(result.metric)
    scale = scale_for(result.unit)
    has_samples = bool(result.sample_values)
    data = [v * scale for v in (result.sample_values if has_samples else [result.value])]
    label = workload_label(result.workload)
    suffix = f"[{label}]" if label else ""
    if occurrence > 1:
        suffix += f"#{occurrence}"
    test_name = result.test_id.rsplit("::", 1)[-1]
    return {
        "group": result.metric,
        "name": f"{test_name}::{result.metric}{suffix}",
        "fullname": f"{result.test_id}::{result.metric}{suffix}",
        "params": None,
        "param": label or None,
        "extra_info": {
            "dsbench": {
                "test_id": result.test_id,
                "metric": result.metric,
                "unit": result.unit,
                "direction": definition.direction if definition else None,
                "value": result.value,
                "limit": result.limit,
                "comparison": result.comparison,
                "passed": result.passed,
                "verdict": result.verdict,
                "limit_source": result.source,
                "workload": result.workload,
                "occurrence": occurrence,
                "scale": scale,
                "has_samples": has_samples,
                "sample_count": result.samples,
                "interval": result.extra.get("interval"),
                "baseline": result.baseline,
                "change_pct": result.change_pct,
                "regressed": result.regressed,
                "regression": result.extra.get("regression"),
                **({"server_metrics": result.extra["server_metrics"]} if "server_metrics" in result.extra else {}),
            }
        },
        "options": {
            "timer": TIMER_NAME,
            "rounds": len(data),
            "warmup": False,
            "disable_gc": False,
            "min_rounds": len(data),
            "max_time": 0,
            "min_time": 0,
        },
        "stats": _stats(data),
    }


def build(
    results: list[MetricResult],
    provenance: dict[str, Any],
    *,
    exitstatus: int,
    interrupted: bool,
    run_name: str,
    invalid: Sequence[InvalidResult] = (),
) -> dict[str, Any]:
    """The JSON document of one run (``invalid``: the tests whose load run was INVALID, with the reason)."""
    import pytest_benchmark

    seen: dict[tuple[str, str, str], int] = {}
    entries = []
    for result in results:
        key = (result.test_id, result.metric, workload_key(result.workload))
        seen[key] = seen.get(key, 0) + 1
        entries.append(benchmark_entry(result, seen[key]))
    git = provenance.get("git") or {}
    machine_info = {
        "node": platform.node(),
        "processor": platform.processor(),
        "machine": platform.machine(),
        "python_compiler": platform.python_compiler(),
        "python_implementation": platform.python_implementation(),
        "python_version": platform.python_version(),
        "release": platform.release(),
        "system": platform.system(),
        "machine_id": machine_id(),
        **{k: provenance.get(k) for k in ("engine", "engine_version", "model", "hw")},
    }
    return {
        "machine_info": machine_info,
        "commit_info": {
            "id": git.get("id", "unversioned"),
            "time": git.get("time"),
            "author_time": git.get("time"),
            "dirty": git.get("dirty", False),
            "project": "pytest-dsbench",
            "branch": git.get("branch"),
        },
        "benchmarks": entries,
        "datetime": provenance.get("time"),
        "version": getattr(pytest_benchmark, "__version__", "unknown"),
        "dsbench": {
            "schema": SCHEMA,
            "run_name": run_name,
            "provenance": provenance,
            "exitstatus": exitstatus,
            "interrupted": interrupted,
            "result_count": len(entries),
            "invalid_runs": [record.as_dict() for record in invalid],
        },
    }


@dataclass
class StoredEntry:
    """One stored result, back in the metric's own unit."""

    test_id: str
    metric: str
    unit: str
    value: float
    workload: dict[str, Any]
    occurrence: int
    samples: list[float]
    limit: float | None = None
    comparison: str | None = None
    verdict: str = "-"
    sample_count: int = 0
    baseline: float | None = None
    change_pct: float | None = None
    regression: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.test_id, self.metric, workload_key(self.workload), self.occurrence)


@dataclass
class StoredRun:
    """A run read back from storage."""

    path: Path
    doc: dict[str, Any]
    entries: list[StoredEntry] = field(default_factory=list)
    #: Name in plots and tables instead of the run number (e.g. "this run").
    display: str | None = None

    @property
    def short_name(self) -> str:
        """``display`` or the run number (``0003``)."""
        return self.display or self.run_id.split("_", 1)[0]

    @property
    def run_id(self) -> str:
        """The file name without ``.json`` (``0003_<commit>_<time>_<suffix>``)."""
        return self.path.stem

    @property
    def number(self) -> int:
        head = self.path.name.split("_", 1)[0]
        return int(head) if head.isdigit() else 0

    @property
    def label(self) -> str:
        """``<engine>-<hw>/<run id>``: unique across the storage root."""
        return f"{self.path.parent.parent.name}/{self.run_id}"

    @property
    def provenance(self) -> dict[str, Any]:
        block = self.doc.get("dsbench") or {}
        prov = block.get("provenance") if isinstance(block, dict) else None
        return prov if isinstance(prov, dict) else {}

    @property
    def interrupted(self) -> bool:
        block = self.doc.get("dsbench") or {}
        return bool(block.get("interrupted")) if isinstance(block, dict) else False

    @property
    def datetime(self) -> str:
        return str(self.doc.get("datetime") or "")

    def find(self, test_id: str, metric: str) -> list[StoredEntry]:
        """Every entry of one test and metric (one per workload it was measured under)."""
        return [e for e in self.entries if e.test_id == test_id and e.metric == metric]


def parse(path: Path, doc: dict[str, Any], display: str | None = None) -> StoredRun:
    """Read the entries of a stored document; entries not written by pytest-dsbench are ignored."""
    run = StoredRun(path=path, doc=doc, display=display)
    for bench in doc.get("benchmarks") or []:
        info = ((bench.get("extra_info") or {}).get("dsbench")) if isinstance(bench, dict) else None
        if not isinstance(info, dict) or "metric" not in info:
            continue
        stats = bench.get("stats") or {}
        scale = float(info.get("scale") or 1.0)
        samples = [float(v) / scale for v in (stats.get("data") or [])] if info.get("has_samples") else []
        run.entries.append(
            StoredEntry(
                test_id=str(info.get("test_id")),
                metric=str(info["metric"]),
                unit=str(info.get("unit", "")),
                value=float(info.get("value", float("nan"))),
                workload=dict(info.get("workload") or {}),
                occurrence=int(info.get("occurrence") or 1),
                samples=samples,
                limit=info.get("limit"),
                comparison=info.get("comparison"),
                verdict=str(info.get("verdict") or "-"),
                sample_count=int(info.get("sample_count") or len(samples)),
                baseline=info.get("baseline"),
                change_pct=info.get("change_pct"),
                regression=info.get("regression"),
            )
        )
    return run
