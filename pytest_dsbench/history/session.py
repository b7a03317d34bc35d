"""The history's part in a run: vet the baseline before any test runs, store the run at the end.

* :func:`configure` (when the run is built, in ``pytest_configure``) validates the regression limits, resolves
  ``--dsbench-compare`` and refuses a baseline of another engine or hardware profile before any test runs (a
  usage error, one line). It builds the :class:`~pytest_dsbench.history.compare.Comparator` whose ``compare``
  the run hands to every gate, so regressions are judged inside each test: the exit code and JUnit see them.
* :func:`store` (at session finish) stores every recorded result with its samples and provenance and returns
  the run's document, from which the run writes the JSON and HTML reports (:mod:`pytest_dsbench.report`).

A library: it is handed options, profile and engine, and never sees pytest's configuration.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.history import document, provenance, storage
from pytest_dsbench.history.compare import DEFAULT_CONFIDENCE, Comparator, RegressLimits, validate_limits
from pytest_dsbench.history.document import StoredRun
from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.results import InvalidResult, MetricResult
from pytest_dsbench.thresholds import HardwareProfile

INTERRUPTED_EXIT_STATUS = 2
"""pytest's ``ExitCode.INTERRUPTED``: a run stopped with Ctrl-C is stored, marked interrupted."""


@dataclass
class HistorySession:
    """What the history knows and did in this run (read by the terminal summary and the reports)."""

    root: Path
    folder: Path
    save_enabled: bool
    limits: RegressLimits
    confidence: float = DEFAULT_CONFIDENCE
    baseline: StoredRun | None = None
    history_runs: list[StoredRun] = field(default_factory=list)
    saved_path: Path | None = None
    report_paths: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    document: dict[str, Any] | None = None
    comparator: Comparator | None = None


def configure(
    options: DsbenchOptions, profile: HardwareProfile, *, identity: Callable[[], dict[str, Any] | None]
) -> HistorySession:
    """Validate limits, load and vet the baseline, and build the regression comparator; usage errors stop the
    run. ``identity`` gives the engine's identity once it is known (results are compared only between runs of
    the same engine and model)."""
    validate_limits(options.regress_pct, "--dsbench-regress")
    profile_source = f"{profile.path.name if profile.path else options.hw} [regress_pct]"
    validate_limits(dict(profile.regress_pct), profile_source)
    limits = RegressLimits(
        cli=dict(options.regress_pct), profile=dict(profile.regress_pct), profile_source=profile_source
    )
    raw_root = str(options.storage_dir)
    save_enabled = not storage.storage_disabled(raw_root)
    root = options.storage_dir
    history = HistorySession(
        root=root,
        folder=storage.run_folder(root, options.engine, options.hw),
        save_enabled=save_enabled,
        limits=limits,
    )
    if not options.compare:
        return history
    if not save_enabled:
        raise storage.HistoryError(
            "--dsbench-compare needs a history folder, but --dsbench-storage is "
            f"{raw_root!r} (saving off). Give the folder that holds the baseline."
        )
    try:
        baseline = storage.resolve(root, history.folder, options.compare)
    except storage.HistoryError:
        if options.compare.strip() != "latest" or storage.run_files(history.folder):
            raise
        history.warnings.append(
            f"no stored run in {history.folder} yet: nothing to compare with; this run becomes the baseline"
        )
        return history
    current = {"engine": options.engine, "hw": options.hw}
    diffs = provenance.mismatches(baseline.provenance, current, ("engine", "hw"))
    if diffs and not options.force_compare:
        raise storage.HistoryError(
            f"refusing to compare with run {baseline.label}: {'; '.join(diffs)}; pass "
            "--dsbench-force-compare to compare anyway"
        )
    if diffs:
        history.warnings.append(f"forced comparison with run {baseline.label}: {'; '.join(diffs)}")
    history.baseline = baseline
    history.history_runs = storage.comparable_history(baseline)
    history.comparator = Comparator(
        baseline,
        limits,
        confidence=history.confidence,
        force=options.force_compare,
        identity=identity,
        history=history.history_runs,
    )
    return history


def store(
    history: HistorySession,
    results: Sequence[MetricResult],
    options: DsbenchOptions,
    profile: HardwareProfile,
    engine: EngineInfo | None,
    *,
    invocation_args: tuple[str, ...],
    cwd: Path,
    exitstatus: int,
    invalid: Sequence[InvalidResult] = (),
) -> dict[str, Any]:
    """Store the run's results with their provenance (when saving is on) and return the run's document.

    A run that measured nothing (every load run INVALID) is reported but not stored: it would become the
    baseline that the next run finds nothing to compare with."""
    prov = provenance.collect(options, profile, engine, invocation_args=invocation_args, cwd=cwd)
    prov["regress_pct"] = {**history.limits.profile, **history.limits.cli}
    prov["confidence"] = history.confidence
    prov["baseline_run"] = history.baseline.label if history.baseline else None
    when = _dt.datetime.fromisoformat(prov["time"])
    name = storage.run_name(str(prov["git"]["id"]), when)
    doc = document.build(
        list(results), prov, exitstatus=int(exitstatus),
        interrupted=int(exitstatus) == INTERRUPTED_EXIT_STATUS, run_name=name, invalid=invalid,
    )
    history.document = doc
    if history.save_enabled and not results:
        history.warnings.append(f"nothing was measured, so the run is not stored in {history.folder}")
    elif history.save_enabled:
        try:
            history.saved_path = storage.save(history.folder, name, doc)
        except OSError as exc:
            history.warnings.append(f"could not store the run in {history.folder}: {exc}")
    return doc
