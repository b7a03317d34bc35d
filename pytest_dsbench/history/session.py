"""The history's part in a pytest session: load the baseline when pytest configures, store the run at the end.

* ``configure`` (from ``pytest_configure``) validates the regression limits, resolves ``--dsbench-compare``
and
  refuses a baseline of another engine or hardware profile before any test runs (exit code 4, one line). It
  hands a :class:`~pytest_dsbench.history.compare.Comparator` to the results, so ``dsbench_gate.record``
  judges regressions inside each test: the exit code and JUnit see them.
* ``finish`` (from ``pytest_sessionfinish``) stores every recorded result with its samples and provenance, and
  writes the JSON and HTML reports into the artifacts folder.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_dsbench.history import document, provenance, storage
from pytest_dsbench.history.compare import DEFAULT_CONFIDENCE, Comparator, RegressLimits, validate_limits
from pytest_dsbench.history.document import StoredRun
from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.results import RunResults
from pytest_dsbench.thresholds import HardwareProfile


@dataclass
class HistorySession:
    """What the history knows and did in this pytest session (read by the terminal summary)."""

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


HISTORY = pytest.StashKey[HistorySession]()


def _engine_identity(config: pytest.Config) -> dict[str, Any] | None:
    from pytest_dsbench.stash import ENGINE_SESSION

    session = config.stash.get(ENGINE_SESSION, None)
    if session is None or session.info is None:
        return None
    return dict(session.info.identity())


def configure(
    config: pytest.Config, options: DsbenchOptions, profile: HardwareProfile, results: RunResults
) -> HistorySession:
    """Validate limits, load and vet the baseline, and install the comparator; usage errors stop the run."""
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
    config.stash[HISTORY] = history
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
    results.comparator = Comparator(
        baseline,
        limits,
        confidence=history.confidence,
        force=options.force_compare,
        identity=lambda: _engine_identity(config),
        history=history.history_runs,
    )
    return history


def _interrupted(exitstatus: int | pytest.ExitCode) -> bool:
    return int(exitstatus) == int(pytest.ExitCode.INTERRUPTED)


def finish(config: pytest.Config, exitstatus: int | pytest.ExitCode) -> None:
    """Store the run (when anything was recorded) and write the JSON and HTML reports."""
    from pytest_dsbench import report
    from pytest_dsbench.stash import ENGINE_SESSION, OPTIONS, PROFILE, RESULTS

    history = config.stash.get(HISTORY, None)
    results = config.stash.get(RESULTS, None)
    options = config.stash.get(OPTIONS, None)
    profile = config.stash.get(PROFILE, None)
    if history is None or results is None or options is None or profile is None or not results.items:
        return
    if hasattr(config, "workerinput"):
        return  # pytest-xdist worker: the controller owns the run
    engine_session = config.stash.get(ENGINE_SESSION, None)
    engine = engine_session.info if engine_session is not None else None
    prov = provenance.collect(
        options,
        profile,
        engine,
        invocation_args=tuple(config.invocation_params.args),
        cwd=Path(config.rootpath),
    )
    prov["regress_pct"] = {**history.limits.profile, **history.limits.cli}
    prov["confidence"] = history.confidence
    prov["baseline_run"] = history.baseline.label if history.baseline else None
    when = _dt.datetime.fromisoformat(prov["time"])
    name = storage.run_name(str(prov["git"]["id"]), when)
    doc = document.build(
        results.items, prov, exitstatus=int(exitstatus), interrupted=_interrupted(exitstatus), run_name=name
    )
    history.document = doc
    if history.save_enabled:
        try:
            history.saved_path = storage.save(history.folder, name, doc)
        except OSError as exc:
            history.warnings.append(f"could not store the run in {history.folder}: {exc}")
    try:
        history.report_paths = report.write_reports(options.artifacts_dir, doc, history)
    except OSError as exc:
        history.warnings.append(f"could not write the reports to {options.artifacts_dir}: {exc}")
