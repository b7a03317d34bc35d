"""Seed 003, the "tencent" evaluation: the most total tok/s and QPM while mean TPOT stays <= 50 ms.

The fixed run: input 3500 / output 1200 (range ratio 1), num-prompts = request-rate = max-concurrency = 128 by
default (the hardware profile's ``[throughput.tencent]`` sets them). Its ``final_metrics`` line is written as
the seed's tool prints it::

    final_metrics: [{'tpot (ms)': '35.98', 'ttft (ms)': '144639.27', 'input_throughput (tok/s)': '1346.12',
    'output_throughput (tok/s)': '461.53', 'total_throughput (tok/s)': '1807.65', 'QPM (req/min)': 22.8}]

(strings with two decimals; QPM is 60 x the request throughput *after* rounding it to two decimals, which is
how every QPM in the seed's table comes out, e.g. 0.38 req/s -> 22.8; the exact value is the ``qpm`` metric).

The search: within [1, the entry's max-concurrency] (the seed lowers it from 128 until TPOT fits), the largest
max-concurrency C whose probe (num-prompts = request-rate = C scaled up to enough samples for the statistic,
max-concurrency C) meets the TPOT limit with no errors. The top of the range is probed first (a fast engine is
done in one probe), then halved while it fails, then integer bisection; TPOT is assumed to grow with
concurrency (a non-monotone answer shows in the probe history). Probes and time are bounded: a probe stops
sending when the budget is spent, and one left with too few samples does not pass.

Judged: the fixed run's ``tpot_ms_mean`` against ``[slo] tpot_ms_mean_max``, its ``total_tok_s`` and ``qpm``
against the workload's floors, its error rate against ``[slo] error_rate_max``; the search's
``max_concurrency_under_slo``, which fails when not even the lowest concurrency meets the TPOT limit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pytest_dsbench import _atomic
from pytest_dsbench.load.api import LoadContext, run_workload
from pytest_dsbench.load.datasets import DatasetSpec
from pytest_dsbench.load.formats import sglang_text
from pytest_dsbench.load.runner import LoadRun
from pytest_dsbench.methods.entry import Judge
from pytest_dsbench.workloads.tencent import DEFAULT_MAX_PROBES, DEFAULT_TIME_BUDGET_S, TencentConfig

INPUT_LEN, OUTPUT_LEN, CONCURRENCY = 3500, 1200, 128
MIN_SAMPLES = {"mean": 16, "median": 16, "p90": 50, "p95": 100, "p99": 200}


def final_metrics(run: LoadRun) -> list[dict[str, Any]]:
    """Seed 003's ``final_metrics`` list for one run."""
    v = run.summary.values
    return [
        {
            "tpot (ms)": f"{v['tpot_ms_mean']:.2f}",
            "ttft (ms)": f"{v['ttft_ms_mean']:.2f}",
            "input_throughput (tok/s)": f"{v['input_tok_s']:.2f}",
            "output_throughput (tok/s)": f"{v['output_tok_s']:.2f}",
            "total_throughput (tok/s)": f"{v['total_tok_s']:.2f}",
            "QPM (req/min)": round(round(v["request_throughput_req_s"], 2) * 60, 2),
        }
    ]


def final_metrics_line(run: LoadRun) -> str:
    return f"final_metrics: {final_metrics(run)!r}"


def samples_for(statistic: str, concurrency: int) -> int:
    """Requests per probe: twice the concurrency (EvalScope's rule), at least what the statistic needs."""
    return max(2 * concurrency, MIN_SAMPLES.get(statistic, 16))


@dataclass
class Probe:
    """One load point of the search."""

    concurrency: int
    value: float
    samples: int
    error_rate: float
    passed: bool
    raw: str = ""


@dataclass
class SearchResult:
    """The largest concurrency that met the limit (None: not even the lowest), and every probe."""

    best: int | None
    probes: list[Probe]
    stopped: str
    low: int
    high: int
    statistic: str
    limit_ms: float

    def as_json(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in asdict(self).items() if k != "probes"},
            "probes": [asdict(p) for p in self.probes],
        }


def search(
    probe: Callable[[int, float], Probe],
    low: int,
    high: int,
    *,
    max_probes: int = DEFAULT_MAX_PROBES,
    time_budget_s: float = DEFAULT_TIME_BUDGET_S,
    statistic: str = "mean",
    limit_ms: float = 50.0,
    clock: Callable[[], float] = time.monotonic,
) -> SearchResult:
    """Largest passing concurrency in [low, high], within ``max_probes`` probes and ``time_budget_s``.

    The top is probed first (a fast engine is done in one probe); while probes fail the concurrency is halved
    (high concurrency finishes its samples soonest; the slow sequential bottom is probed only when everything
    above failed); then integer bisection between the last failing and the first passing concurrency.
    ``probe(concurrency, seconds_left)`` runs one load point and must stop sending when the time is up.
    """
    if low < 1 or high < low:
        raise ValueError(f"search range [{low}, {high}] is empty")
    start = clock()
    probes: list[Probe] = []

    def result(best: int | None, stopped: str) -> SearchResult:
        return SearchResult(best, probes, stopped, low, high, statistic, limit_ms)

    def over_budget() -> str | None:
        if len(probes) >= max_probes:
            return f"max_probes ({max_probes})"
        if clock() - start >= time_budget_s:
            return f"time budget ({time_budget_s:g} s)"
        return None

    def run(concurrency: int) -> Probe:
        outcome = probe(concurrency, max(1.0, time_budget_s - (clock() - start)))
        probes.append(outcome)
        return outcome

    bad = high
    if run(high).passed:
        return result(high, "top of the range passes")
    while True:  # halve down until a concurrency passes
        if bad == low:
            return result(None, "the lowest concurrency fails")
        if (reason := over_budget()) is not None:
            return result(None, reason)
        candidate = max(low, bad // 2)
        if run(candidate).passed:
            good = candidate
            break
        bad = candidate
    while bad - good > 1:
        if (reason := over_budget()) is not None:
            return result(good, reason)
        mid = (good + bad) // 2
        if run(mid).passed:
            good = mid
        else:
            bad = mid
    return result(good, "converged")


def dataset(ctx: LoadContext, workload: TencentConfig, num_prompts: int) -> DatasetSpec:
    return DatasetSpec(
        name="random",
        num_prompts=num_prompts,
        input_len=workload.input_len or INPUT_LEN,
        output_len=workload.output_len or OUTPUT_LEN,
        range_ratio=1.0 if workload.range_ratio is None else workload.range_ratio,
        seed=1 if workload.seed is None else workload.seed,
        dataset_path=ctx.sharegpt_path,
    )


@dataclass
class TencentResult:
    run: LoadRun
    final_metrics: list[dict[str, Any]]
    files: dict[str, Path] = field(default_factory=dict)


def run_fixed(ctx: LoadContext, name: str, workload: TencentConfig) -> TencentResult:
    """The seed's fixed run; writes ``<name>.json`` (final_metrics) and ``<name>.log`` (block + final line)."""
    concurrency = workload.max_concurrency or CONCURRENCY
    rate = workload.request_rate or float(workload.num_prompts)
    load = run_workload(
        ctx,
        dataset(ctx, workload, workload.num_prompts),
        name=f"tencent-{name}",
        request_rate=rate,
        max_concurrency=concurrency,
        prefix_cache=workload.prefix_cache,
    )
    folder = ctx.results_dir / "methods" / "tencent"
    metrics = final_metrics(load)
    json_path, log_path = folder / f"{name}.json", folder / f"{name}.log"
    _atomic.write_text(json_path, json.dumps(metrics, indent=4) + "\n")  # the seed's key order, not sorted
    _atomic.write_text(
        log_path,
        sglang_text(load, ctx.engine.name) + "\n" + "=" * 100 + "\n" + final_metrics_line(load) + "\n",
    )
    return TencentResult(run=load, final_metrics=metrics, files={"json": json_path, "log": log_path})


def run_search(
    ctx: LoadContext,
    name: str,
    workload: TencentConfig,
    *,
    limit_ms: float,
    error_rate_max: float,
    low: int = 1,
    high: int | None = None,
) -> SearchResult:
    """Search the largest concurrency meeting mean TPOT <= ``limit_ms``; history goes to ``<name>-search.json``."""
    # The seed starts from 128/128/128 and lowers the concurrency until TPOT fits: search below the entry's.
    top = high or workload.max_concurrency or ctx.hw.deployment.max_concurrency or CONCURRENCY
    statistic = "mean"

    def probe(concurrency: int, seconds_left: float) -> Probe:
        n = samples_for(statistic, concurrency)
        load = run_workload(
            ctx,
            dataset(ctx, workload, n),
            name=f"tencent-{name}-search-c{concurrency}",
            request_rate=float(concurrency),
            max_concurrency=concurrency,
            max_duration_s=seconds_left,
        )
        value = load.summary[f"tpot_ms_{statistic}"]
        error_rate = load.summary["error_rate"]
        samples = len(load.summary.samples["tpot"])
        enough = samples >= min(n, MIN_SAMPLES.get(statistic, 16))  # cut short by the budget: inconclusive
        passed = value <= limit_ms and error_rate <= error_rate_max and enough
        return Probe(concurrency, value, samples, error_rate, passed, str(load.raw_path or ""))

    result = search(
        probe,
        low,
        max(low, top),
        max_probes=workload.search_max_probes or DEFAULT_MAX_PROBES,
        time_budget_s=workload.search_time_budget_s or DEFAULT_TIME_BUDGET_S,
        statistic=statistic,
        limit_ms=limit_ms,
    )
    _atomic.write_json(ctx.results_dir / "methods" / "tencent" / f"{name}-search.json", result.as_json())
    return result


@dataclass
class TencentOutcome:
    """The fixed run and the concurrency search of one tencent workload."""

    fixed: TencentResult
    search: SearchResult


def run(ctx: LoadContext, name: str, workload: TencentConfig) -> TencentOutcome:
    """The fixed run, then the search for the largest concurrency within the profile's TPOT and error limits."""
    fixed = run_fixed(ctx, name, workload)
    slo = ctx.hw.slo
    found = run_search(ctx, name, workload, limit_ms=slo.tpot_ms_mean_max, error_rate_max=slo.error_rate_max)
    return TencentOutcome(fixed, found)


def judge(outcome: TencentOutcome, judge: Judge) -> None:
    """The fixed run's TPOT, total throughput, QPM and error rate; the search's largest concurrency."""
    fixed = outcome.fixed.run
    judge.record(fixed, "tpot_ms_mean", judge.slo_limit("tpot_ms_mean"))
    judge.record(fixed, "total_tok_s")
    judge.record(fixed, "qpm")
    judge.record_health(fixed)
    if not outcome.fixed.files["json"].is_file():
        judge.gate.fail(f"the seed's final_metrics file {outcome.fixed.files['json']} was not written")
    result = outcome.search
    limit = judge.profile.slo.tpot_ms_mean_max
    history = ", ".join(
        f"c={p.concurrency}: {p.value:.2f} ms ({p.samples} req){'' if p.passed else ' FAIL'}" for p in result.probes
    )
    judge.gate.record(
        "max_concurrency_under_slo",
        float(result.best or 0),
        sample_count=len(result.probes),
        workload={
            "method": "tencent",
            "entry": judge.name,
            "statistic": "tpot_ms_mean",
            "limit_ms": limit,
            "range": [result.low, result.high],
            "stopped": result.stopped,
        },
    )
    if result.best is None:
        judge.gate.fail(
            f"no concurrency in [{result.low}, {result.high}] keeps tpot_ms_mean <= {limit:g} ms "
            f"({result.stopped}; probes: {history})"
        )


__all__ = [
    "Probe",
    "SearchResult",
    "TencentConfig",
    "TencentOutcome",
    "TencentResult",
    "final_metrics",
    "judge",
    "run",
    "run_fixed",
    "run_search",
    "search",
]
