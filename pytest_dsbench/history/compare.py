"""The regression gate: is this result worse than the baseline run's, beyond noise and beyond the limit?

A result *regresses* only when all three hold:

1. a regression limit applies to the metric: ``--dsbench-regress METRIC:PCT`` (fnmatch patterns such as
   ``tpot_ms_*:10`` allowed), else the hardware profile's ``[regress_pct]``; metrics without one are compared
   and reported, never failed;
2. the change of the recorded value, signed by the metric's direction (TPOT up, throughput down and accuracy
   down are worse), exceeds that percentage;
3. every statistical test that has enough data says the new run is worse at the stated confidence (default
   99%, one-sided):

   * on the per-request samples of both runs (at least ``MIN_SAMPLES`` each): Mann-Whitney U for means,
     medians, throughput and accuracy; a bootstrap interval for tail statistics (p75 and above, max, min,
     std);
   * against the run-to-run spread of the result in earlier comparable runs (at least ``MIN_HISTORY_RUNS``,
     the baseline included): a t prediction test. A test on one run's samples cannot see whole runs that drift
     together (a busy machine, another tenant, thermal throttling); this one can, and it judges results
     recorded without samples.

   With neither, the change is shown but not judged.

Results are compared only with a baseline of the same test, metric and workload, and runs only when engine,
hardware profile and model agree; otherwise the comparison is *refused* with a message naming the difference
(``--dsbench-force-compare`` overrides).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_dsbench import metrics
from pytest_dsbench.errors import DsbenchUsageError
from pytest_dsbench.history import provenance as prov
from pytest_dsbench.history import stats
from pytest_dsbench.history.document import StoredEntry, StoredRun, workload_key
from pytest_dsbench.results import MetricResult

DEFAULT_CONFIDENCE = 0.99
_GLOB_CHARS = "*?["
FORCE_HINT = "pass --dsbench-force-compare to compare anyway"


@dataclass(frozen=True)
class RegressLimits:
    """Regression limits in percent per metric name or pattern: command line first, then the hw profile."""

    cli: dict[str, float] = field(default_factory=dict)
    profile: dict[str, float] = field(default_factory=dict)
    profile_source: str = "hw profile [regress_pct]"

    def limit_for(self, metric: str) -> tuple[float, str] | None:
        """The percentage for ``metric`` and where it came from, or None when no limit applies."""
        for table, source in ((self.cli, "--dsbench-regress"), (self.profile, self.profile_source)):
            if metric in table:
                return table[metric], source
            for pattern, pct in table.items():
                if any(c in pattern for c in _GLOB_CHARS) and fnmatch.fnmatchcase(metric, pattern):
                    return pct, source
        return None


def validate_limits(limits: dict[str, float], where: str) -> None:
    """Every name must be a known metric (or a pattern matching one); raise a one-line usage error
    otherwise."""
    for name in limits:
        if any(c in name for c in _GLOB_CHARS):
            if not any(fnmatch.fnmatchcase(m, name) for m in metrics.METRICS):
                raise DsbenchUsageError(
                    f"{where}: pattern {name!r} matches no metric (metric names look like "
                    "tpot_ms_mean, ttft_ms_p99, output_tok_s, accuracy)."
                )
            continue
        try:
            metrics.get(name)
        except KeyError as exc:
            raise DsbenchUsageError(f"{where}: {exc.args[0]}") from None


@dataclass
class Comparison:
    """The gate's judgement of one result against its baseline."""

    test_id: str
    metric: str
    unit: str
    value: float
    baseline_run: str
    baseline_value: float | None = None
    change_pct: float | None = None
    limit_pct: float | None = None
    limit_source: str = ""
    method: str | None = None
    p_value: float | None = None
    confidence: float = DEFAULT_CONFIDENCE
    samples_new: int = 0
    samples_baseline: int = 0
    significant: bool | None = None
    regressed: bool = False
    refused: str | None = None
    note: str = ""
    detail: str = ""
    workload: dict[str, Any] = field(default_factory=dict)
    history_runs: int = 0
    history_p_value: float | None = None
    noise_pct: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def raw_change_pct(self) -> float | None:
        """The plain signed change of the value (positive = the number went up)."""
        if self.baseline_value in (None, 0) or self.baseline_value is None:
            return None
        return (self.value - self.baseline_value) / abs(self.baseline_value) * 100.0

    def change_text(self) -> str:
        """``+12.3% (worse)`` / ``-4.0% (better)``: the actual change and what it means for this metric."""
        raw = self.raw_change_pct
        if raw is None or self.change_pct is None:
            return "-"
        sense = "worse" if self.change_pct > 0 else "better" if self.change_pct < 0 else "same"
        return f"{raw:+.1f}% ({sense})"

    def message(self) -> str:
        """One line for the test failure: baseline vs measured, the allowed change, the test and its
        confidence."""
        if self.refused:
            return self.refused
        base = f"{self.baseline_value:.4g}" if self.baseline_value is not None else "?"
        raw = self.raw_change_pct
        change = (
            f"{raw:+.1f}%, {'worse' if (self.change_pct or 0) > 0 else 'not worse'}"
            if raw is not None
            else "?"
        )
        expected = (
            f"expected at most {self.limit_pct:g}% worse ({self.limit_source})"
            if self.limit_pct is not None
            else "no regression limit"
        )
        verb = "regressed" if self.regressed else "compared"
        return (
            f"{self.metric} {verb} against run {self.baseline_run}: baseline {base} {self.unit}, measured "
            f"{self.value:.4g} {self.unit} ({change}); {expected}; {self.detail}"
        )


def _alpha(confidence: float) -> float:
    return 1.0 - confidence


def _within_run(
    out: Comparison, samples: Sequence[float], baseline: StoredEntry, higher_is_better: bool, conf_text: str
) -> tuple[str, bool] | None:
    """The test on both runs' per-request samples: (detail, significant), or None with too few samples."""
    if len(samples) < stats.MIN_SAMPLES or len(baseline.samples) < stats.MIN_SAMPLES:
        return None
    alpha = _alpha(out.confidence)
    if stats.is_tail_statistic(out.metric):
        boot = stats.bootstrap_change(
            baseline.samples,
            samples,
            out.metric,
            higher_is_better=higher_is_better,
            confidence=out.confidence,
            seed=stats.seed_for(out.test_id, out.metric),
        )
        out.method, out.p_value = "bootstrap", boot.p_value
        worse = "worse" if boot.lower_pct > 0 else "(not worse)"
        return (
            f"bootstrap of the {boot.statistic} ({boot.resamples} resamples): with {conf_text} the change is "
            f"at least {boot.lower_pct:+.1f}% {worse}, {len(samples)} vs {len(baseline.samples)} samples",
            boot.lower_pct > 0.0,
        )
    alternative: stats.Alternative = "less" if higher_is_better else "greater"
    mwu = stats.mann_whitney_u(samples, baseline.samples, alternative)
    out.method, out.p_value = "mann-whitney-u", mwu.p_value
    significant = mwu.p_value < alpha
    return (
        f"Mann-Whitney U one-sided p={mwu.p_value:.2g} {'<' if significant else '>='} {alpha:.2g} "
        f"({conf_text}), {len(samples)} vs {len(baseline.samples)} samples",
        significant,
    )


def _across_runs(
    out: Comparison, history: Sequence[float], higher_is_better: bool
) -> tuple[str, bool] | None:
    """The test against earlier runs' values: (detail, significant), or None with too short a history."""
    if len(history) < stats.MIN_HISTORY_RUNS:
        return None
    alpha = _alpha(out.confidence)
    r2r = stats.run_to_run(history, out.value, higher_is_better=higher_is_better)
    out.history_runs, out.history_p_value, out.noise_pct = r2r.runs, r2r.p_value, r2r.noise_pct
    significant = r2r.p_value < alpha
    return (
        f"run-to-run t test over {r2r.runs} earlier runs (noise {r2r.noise_pct:.1f}%) p={r2r.p_value:.2g} "
        f"{'<' if significant else '>='} {alpha:.2g}",
        significant,
    )


def judge(
    *,
    test_id: str,
    metric: str,
    unit: str,
    value: float,
    samples: Sequence[float],
    baseline: StoredEntry,
    baseline_run: str,
    limits: RegressLimits,
    confidence: float = DEFAULT_CONFIDENCE,
    workload: dict[str, Any] | None = None,
    history: Sequence[float] = (),
) -> Comparison:
    """Compare one result with its baseline entry (same test, metric and workload already established).

    ``history`` holds the values of the same result in earlier comparable runs (oldest first, the baseline
    last). Every test that has enough data must agree that the result is worse: the one on per-request samples
    and, with at least ``MIN_HISTORY_RUNS`` earlier runs, the run-to-run one.
    """
    definition = metrics.METRICS.get(metric)
    higher_is_better = definition is not None and definition.direction == "higher_is_better"
    if definition is not None:
        change = definition.change_pct(value, baseline.value)
    else:
        change = 0.0 if baseline.value == 0 else (value - baseline.value) / abs(baseline.value) * 100.0
    limit = limits.limit_for(metric)
    out = Comparison(
        test_id=test_id,
        metric=metric,
        unit=unit,
        value=value,
        baseline_run=baseline_run,
        baseline_value=baseline.value,
        change_pct=change if math.isfinite(change) else None,
        limit_pct=limit[0] if limit else None,
        limit_source=limit[1] if limit else "",
        confidence=confidence,
        samples_new=len(samples),
        samples_baseline=len(baseline.samples),
        workload=dict(workload if workload is not None else baseline.workload),
    )
    conf_text = f"{confidence * 100:g}% confidence"
    tests = [
        t
        for t in (
            _within_run(out, samples, baseline, higher_is_better, conf_text),
            _across_runs(out, history, higher_is_better),
        )
        if t is not None
    ]
    if not tests:
        out.note = (
            f"not tested: {len(samples)} vs {len(baseline.samples)} samples (need {stats.MIN_SAMPLES} per "
            f"run) and {len(history)} earlier runs (need {stats.MIN_HISTORY_RUNS})"
        )
        out.detail = out.note
        return out
    if out.method is None:
        out.method, out.p_value = "run-to-run", out.history_p_value
    elif out.history_runs:
        out.method += "+run-to-run"
    out.detail = "; ".join(detail for detail, _ in tests)
    out.significant = all(significant for _, significant in tests)
    exceeds = limit is not None and out.change_pct is not None and out.change_pct > limit[0]
    out.regressed = bool(exceeds and out.significant)
    if limit is None:
        out.note = "no regression limit for this metric"
    elif exceeds and not out.significant:
        out.note = "change exceeds the limit but is within noise"
    elif out.significant and not exceeds:
        out.note = "significant change within the limit"
    return out


def match(
    run: StoredRun, test_id: str, metric: str, workload: dict[str, Any], occurrence: int
) -> tuple[StoredEntry | None, list[StoredEntry]]:
    """The baseline entry with the same test, metric, workload and occurrence, and all entries of the test."""
    candidates = run.find(test_id, metric)
    key = workload_key(workload)
    exact = [e for e in candidates if workload_key(e.workload) == key]
    chosen = next((e for e in exact if e.occurrence == occurrence), exact[-1] if exact else None)
    return chosen, candidates


def history_values(
    runs: Sequence[StoredRun], test_id: str, metric: str, workload: dict[str, Any], occurrence: int
) -> list[float]:
    """The value of one result (same test, metric and workload) in each of ``runs`` that has it."""
    values = []
    for run in runs:
        entry, _ = match(run, test_id, metric, workload, occurrence)
        if entry is not None and math.isfinite(entry.value):
            values.append(entry.value)
    return values


class Comparator:
    """Compares each recorded result with the baseline run as the test records it (used by ``Gate``)."""

    def __init__(
        self,
        baseline: StoredRun,
        limits: RegressLimits,
        *,
        confidence: float = DEFAULT_CONFIDENCE,
        force: bool = False,
        identity: Callable[[], dict[str, Any] | None] = lambda: None,
        history: Sequence[StoredRun] = (),
    ) -> None:
        self.baseline = baseline
        self.history = list(history) or [baseline]
        self.limits = limits
        self.confidence = confidence
        self.force = force
        self.identity = identity
        self._seen: dict[tuple[str, str, str], int] = {}

    def _identity_refusal(self) -> str | None:
        current = self.identity()
        if current is None:
            return None
        diffs = prov.mismatches(self.baseline.provenance, current, ("engine", "model"))
        if not diffs:
            return None
        return f"refusing to compare with run {self.baseline.label}: {'; '.join(diffs)}; {FORCE_HINT}"

    def _unjudged(self, result: MetricResult, *, refused: str | None = None, note: str = "") -> Comparison:
        """A comparison that stops before any test: refused, or with nothing to compare with."""
        return Comparison(
            test_id=result.test_id,
            metric=result.metric,
            unit=result.unit,
            value=result.value,
            baseline_run=self.baseline.label,
            refused=refused,
            note=note,
            confidence=self.confidence,
        )

    def compare(self, result: MetricResult) -> Comparison:
        """Judge ``result`` (with its ``sample_values``) against the baseline; never raises for data
        reasons."""
        key = (result.test_id, result.metric, workload_key(result.workload))
        self._seen[key] = occurrence = self._seen.get(key, 0) + 1
        label = self.baseline.label
        refusal = self._identity_refusal()
        forced_note = ""
        if refusal and not self.force:
            return self._unjudged(result, refused=refusal)
        if refusal:
            forced_note = "forced: " + refusal.split(": ", 1)[1].split(f"; {FORCE_HINT}")[0]
        entry, candidates = match(self.baseline, result.test_id, result.metric, result.workload, occurrence)
        if entry is None and candidates:
            diff = prov.workload_diff(candidates[0].workload, result.workload)
            message = (
                f"refusing to compare {result.metric} with run {label}: the workload differs "
                f"({', '.join(diff)}); {FORCE_HINT}"
            )
            if not self.force:
                return self._unjudged(result, refused=message)
            entry = candidates[0]
            forced_note = "; ".join(
                filter(None, [forced_note, f"forced: workload differs ({', '.join(diff)})"])
            )
        if entry is None:
            return self._unjudged(result, note="no baseline result for this test and metric")
        out = judge(
            test_id=result.test_id,
            metric=result.metric,
            unit=result.unit,
            value=result.value,
            samples=result.sample_values,
            baseline=entry,
            baseline_run=label,
            limits=self.limits,
            confidence=self.confidence,
            workload=result.workload,
            history=history_values(self.history, result.test_id, result.metric, result.workload, occurrence),
        )
        if forced_note:
            out.note = "; ".join(filter(None, [forced_note, out.note]))
        return out


def compare_runs(
    baseline: StoredRun,
    new: StoredRun,
    limits: RegressLimits,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    force: bool = False,
    history: Sequence[StoredRun] = (),
) -> tuple[list[Comparison], list[str]]:
    """Compare two stored runs entry by entry (the CLI's ``compare``); returns comparisons and refusals.

    Raises :class:`DsbenchUsageError` when engine, hardware profile or model differ and ``force`` is off.
    """
    diffs = prov.mismatches(baseline.provenance, new.provenance)
    if diffs and not force:
        raise DsbenchUsageError(
            f"refusing to compare {new.label} with {baseline.label}: {'; '.join(diffs)}. "
            "Pass --force to compare anyway."
        )
    out: list[Comparison] = []
    refusals: list[str] = []
    for entry in new.entries:
        base, candidates = match(baseline, entry.test_id, entry.metric, entry.workload, entry.occurrence)
        if base is None and candidates:
            diff = ", ".join(prov.workload_diff(candidates[0].workload, entry.workload))
            if not force:
                refusals.append(f"{entry.test_id} {entry.metric}: workload differs ({diff})")
                continue
            base = candidates[0]
        if base is None:
            continue
        out.append(
            judge(
                test_id=entry.test_id,
                metric=entry.metric,
                unit=entry.unit,
                value=entry.value,
                samples=entry.samples,
                baseline=base,
                baseline_run=baseline.label,
                limits=limits,
                confidence=confidence,
                workload=entry.workload,
                history=history_values(
                    list(history) or [baseline], entry.test_id, entry.metric, entry.workload, entry.occurrence
                ),
            )
        )
    return out, refusals
