"""Capacity under SLO: the largest max-concurrency or request rate whose every repeat meets every limit.

Seed 003's tencent search (:mod:`pytest_dsbench.methods.tencent`) finds the largest concurrency at which mean
TPOT stays within 50 ms. This generalises it: a ``method = "capacity"`` entry holds its probes to any combination
of p99 (or p90) TTFT, TPOT and e2e limits and a goodput floor (the fraction of requests meeting the per-request
rule ``goodput_*_ms_max``, vLLM's ``--goodput``), and searches either

* ``search = "concurrency"``: max-concurrency C, every prompt sent at once (a closed loop of C users), or
* ``search = "request_rate"``: Poisson arrivals at r req/s (optionally capped by ``max_concurrency``), r in
  steps of ``rate_step``.

Each probe runs ``repeats`` times with fresh prompts; it passes only when every repeat meets every limit with no
more errors than ``[slo] error_rate_max``, and has the samples its statistics need (``[evidence]``: a p99 needs
100 requests with one tail sample) over at least ``min_duration_s``; a repeat short of them makes the probe
inconclusive, which does not pass. Requests per repeat: the entry's ``num_prompts``, at least twice the
concurrency (or the rate x ``min_duration_s``) and what the statistics need. The search itself is
:func:`pytest_dsbench.methods.search.search`; its result, with every probe's per-repeat values, is written to
``<artifacts>/load/methods/capacity/<name>.json``.

Judged: ``max_concurrency_under_slo`` or ``max_request_rate_under_slo`` (stored in history and compared by the
regression gate like every metric; a floor with ``{metric}_min``), with the search's bracket as its interval
(the best passing point and the lowest failing one above it). Not even the lowest point passing is a failure
naming every probe.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_dsbench import _atomic, metrics
from pytest_dsbench.evidence import samples_needed
from pytest_dsbench.load.api import LoadContext, run_workload
from pytest_dsbench.load.datasets import DatasetSpec
from pytest_dsbench.methods.entry import Judge
from pytest_dsbench.methods.search import BRACKET, Probe, SearchResult, search
from pytest_dsbench.metrics import GoodputSlo
from pytest_dsbench.thresholds import Evidence
from pytest_dsbench.workloads.capacity import CapacityConfig

DEFAULT_HIGH_CONCURRENCY = 64


@dataclass
class CapacityOutcome:
    """The search, in the entry's units (requests in flight, or req/s), and where it was written."""

    search: SearchResult
    kind: str
    step: float
    limits: dict[str, float]
    repeats: int
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return "max_concurrency_under_slo" if self.kind == "concurrency" else "max_request_rate_under_slo"

    def point(self, k: int | None) -> float | None:
        """A search point in the entry's units."""
        return None if k is None else round(k * self.step, 6)

    @property
    def best(self) -> float | None:
        return self.point(self.search.best)

    def as_json(self) -> dict[str, Any]:
        good, bad = self.search.bracket
        return {
            "search": self.kind,
            "best": self.best,
            "bracket": [self.point(good), self.point(bad)],
            "limits": self.limits,
            "repeats": self.repeats,
            "stopped": self.search.stopped,
            "range": [self.point(self.search.low), self.point(self.search.high)],
            "probes": [
                {"point": self.point(p.concurrency), "passed": p.passed, "why": p.why, "values": p.values,
                 "samples": p.samples, "error_rate": p.error_rate, "records": p.raw}
                for p in self.search.probes
            ],
        }


def requests_per_repeat(workload: CapacityConfig, point: float, evidence: Evidence) -> int:
    """The entry's num_prompts, at least twice the concurrency (or rate x min_duration_s) and what each limited
    statistic needs."""
    latencies = [metrics.get(m) for m, v in workload.probe_limits().items() if v is not None]
    need = max(
        (samples_needed(m.stat, evidence.min_samples, evidence.tail_samples)
         for m in latencies if isinstance(m, metrics.LatencyMetric)),
        default=evidence.min_samples,
    )
    load = 2 * point if workload.search == "concurrency" else point * evidence.min_duration_s
    return max(workload.num_prompts, math.ceil(load), need)


def judge_repeat(
    summary: metrics.Summary, limits: dict[str, float], error_rate_max: float, evidence: Evidence
) -> list[str]:
    """Why one repeat of a probe does not pass (empty: it does): each limit it misses, too many errors, too few
    samples or too short a run."""
    why = []
    for name, limit in limits.items():
        declared = metrics.get(name)
        value = summary.values.get(name)
        if value is None:
            why.append(f"{name} not measured")
            continue
        if declared.worse(value, limit):
            why.append(f"{name} {value:.4g} {'>' if declared.comparison == '<=' else '<'} {limit:g}")
        if isinstance(declared, metrics.LatencyMetric):
            need = samples_needed(declared.stat, evidence.min_samples, evidence.tail_samples)
            if declared.sample_count(summary) < need:
                why.append(f"{name} from {declared.sample_count(summary)} samples < {need} (inconclusive)")
    if summary.values.get("error_rate", 0.0) > error_rate_max:
        why.append(f"error_rate {summary.values['error_rate']:.3g} > {error_rate_max:g}")
    if summary.duration_s < evidence.min_duration_s:
        why.append(f"lasted {summary.duration_s:.3g} s < [evidence] min_duration_s {evidence.min_duration_s:g} s "
                   "(inconclusive: raise num_prompts)")
    return why


def run(ctx: LoadContext, name: str, workload: CapacityConfig, clock: Callable[[], float] = time.monotonic
        ) -> CapacityOutcome:
    """Search the entry's range; every probe's repeats are load runs of their own (raw records under
    ``<artifacts>/load/capacity-NAME-*.jsonl``)."""
    evidence = ctx.hw.evidence
    concurrency = workload.search == "concurrency"
    step = 1.0 if concurrency else workload.rate_step
    high = workload.high or float(ctx.hw.deployment.max_concurrency or DEFAULT_HIGH_CONCURRENCY)
    low_k, high_k = max(1, math.ceil(workload.low / step - 1e-9)), max(1, math.floor(high / step + 1e-9))
    limits = {m: float(v) for m, v in workload.probe_limits().items() if v is not None}
    goodput = ctx.goodput if workload.goodput_rule_empty else GoodputSlo(
        ttft_ms=workload.goodput_ttft_ms_max, tpot_ms=workload.goodput_tpot_ms_max, e2e_ms=workload.goodput_e2e_ms_max)
    seed = 1 if workload.seed is None else workload.seed

    def probe(k: int, seconds_left: float) -> Probe:
        point = k * step
        label = f"c{k}" if concurrency else f"r{point:g}"
        n = requests_per_repeat(workload, point, evidence)
        arrivals: dict[str, Any] = (
            {"request_rate": math.inf, "max_concurrency": k} if concurrency
            else {"request_rate": point, "max_concurrency": workload.max_concurrency}
        )
        deadline = clock() + seconds_left
        values: dict[str, list[float]] = {m: [] for m in limits}
        why: list[str] = []
        samples = sent = failed = 0
        raw = ""
        for repeat in range(workload.repeats):
            left = deadline - clock()
            if left <= 0:
                why.append(f"time budget spent before repeat {repeat + 1} of {workload.repeats} (inconclusive)")
                break
            dataset = DatasetSpec(  # fresh prompts every repeat and every probe: nothing measured is cached
                name="random", num_prompts=n, input_len=workload.input_len, output_len=workload.output_len,
                range_ratio=1.0 if workload.range_ratio is None else workload.range_ratio,
                seed=seed + 1000 * k + repeat, dataset_path=ctx.sharegpt_path,
            )
            load = run_workload(ctx, dataset, name=f"capacity-{name}-{label}-r{repeat}", max_duration_s=left,
                                goodput=goodput, prefix_cache=workload.prefix_cache, **arrivals)
            for metric in limits:
                values[metric].append(round(load.summary.values.get(metric, math.nan), 4))
            why += [f"repeat {repeat + 1}: {w}" for w in judge_repeat(
                load.summary, limits, ctx.hw.slo.error_rate_max, evidence)]
            samples += load.summary.completed
            sent += len(load.records)
            failed += load.summary.failed
            raw = str(load.raw_path or "")
        worst = max(
            (max(v / limits[m] if metrics.get(m).direction == "lower_is_better" else limits[m] / max(v, 1e-12)
                 for v in vs) for m, vs in values.items() if vs),
            default=math.inf,
        )  # the worst value over its limit (> 1: a limit missed)
        return Probe(k, round(worst, 4), samples, failed / sent if sent else 0.0, not why, raw, values,
                     "; ".join(why))

    result = search(probe, low_k, max(low_k, high_k), max_probes=workload.max_probes,
                    time_budget_s=workload.time_budget_s, criteria={"limits": limits}, clock=clock)
    outcome = CapacityOutcome(result, workload.search, step, limits, workload.repeats)
    path = ctx.results_dir / "methods" / "capacity" / f"{name}.json"
    _atomic.write_json(path, outcome.as_json())
    outcome.files["json"] = path
    return outcome


def judge(outcome: CapacityOutcome, judge: Judge) -> None:
    """The capacity (0 when not even the lowest point passes, which fails) against the entry's floor, with the
    search's bracket as its interval."""
    good, bad = outcome.search.bracket
    limit = judge.limit(outcome.metric)
    runs = sum(len(next(iter(p.values.values()), [])) for p in outcome.search.probes)
    value = outcome.best or 0.0
    judge.gate.record(
        outcome.metric,
        value,
        sample_count=runs,
        limit=None if limit is None else limit.value,
        limit_source="" if limit is None else limit.source,
        workload={
            "method": "capacity",
            "entry": judge.name,
            "search": outcome.kind,
            "limits": outcome.limits,
            "repeats": outcome.repeats,
            "range": [outcome.point(outcome.search.low), outcome.point(outcome.search.high)],
            "input_len": getattr(judge.entry, "input_len", None),
            "output_len": judge.entry.output_len,
        },
        extra={
            "interval": {"value": value, "low": outcome.point(good), "high": outcome.point(bad),
                         "n": len(outcome.search.probes), "method": BRACKET},
            "stopped": outcome.search.stopped,
        },
    )
    if outcome.best is None:
        history = ", ".join(
            f"{outcome.point(p.concurrency):g}: {'pass' if p.passed else p.why}" for p in outcome.search.probes)
        limits = ", ".join(f"{m} {metrics.get(m).comparison} {v:g}" for m, v in outcome.limits.items())
        judge.gate.fail(
            f"no {outcome.kind.replace('_', ' ')} in [{outcome.point(outcome.search.low):g}, "
            f"{outcome.point(outcome.search.high):g}] meets {limits} in every one of {outcome.repeats} repeats "
            f"({outcome.search.stopped}; probes: {history})"
        )


__all__ = ["CapacityConfig", "CapacityOutcome", "judge", "judge_repeat", "requests_per_repeat", "run"]
