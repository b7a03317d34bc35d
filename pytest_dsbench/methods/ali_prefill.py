"""Seed 003, the "ali" prefill evaluation: input token throughput per accelerator at each input length.

Per input length L a workload with one output token (all prompts at once unless the entry sets a rate or max
concurrency), repeated with fresh prompts (another seed each time: a repeat of the same prompts would be
prefix-cache hits) until the 95% t interval of its input tok/s is within ``target_half_width_rel`` of the mean
(at least three repeats, ``[evidence] min_duration_s`` and ``min_samples`` requests in all) or ``max_repeats`` /
``repeat_budget_s`` is reached. The mean per accelerator is seed 003's ``ali_prefill.json``: ``[{"1024":
25574.94, "2048": ..., "4096": ...}]``; the repeats, their values and the interval are
``ali_prefill_evidence.json``.

A length whose interval is still wider than the target when a limit stops it stands, with its interval and a
note saying so (the interval is the honest answer; a floor is judged on the mean and the regression gate on the
repeats). INVALID, naming the fix: a length whose repeats had too little evidence (``[evidence]``), and prefill
rates that no batch cost explains (for lengths L1 < L2 the time of a batch cannot shrink, nor grow faster than
quadratically, so rate(L2) / rate(L1) lies within [L1 / L2, L2 / L1]; one short run of 4 requests said 1,748
tok/s at 256 tokens and 24,661 at 512).

Judged: ``input_tok_s_per_device`` at each input length (the repeats its samples) against the workload's
``input_tok_s_per_device_min``, and the error rate over its repeats.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

from pytest_dsbench.evidence import Interval, shortfall, t_interval
from pytest_dsbench.load.api import LoadContext, record_expert_load, run_workload
from pytest_dsbench.load.runner import LoadRun
from pytest_dsbench.methods.ali import dataset, write_outputs
from pytest_dsbench.methods.entry import Judge
from pytest_dsbench.thresholds import Evidence
from pytest_dsbench.workloads.ali import (
    DEFAULT_MAX_REPEATS,
    DEFAULT_REPEAT_BUDGET_S,
    DEFAULT_TARGET_HALF_WIDTH_REL,
    MIN_REPEATS,
    PREFILL_INPUT_LENS,
    AliPrefillConfig,
)


@dataclass
class PrefillLength:
    """The repeats of one input length and the interval of their input tok/s per accelerator."""

    input_len: int
    runs: list[LoadRun]
    tok_s_per_device: list[float]
    interval: Interval | None
    stopped: str

    @property
    def mean(self) -> float:
        return math.fsum(self.tok_s_per_device) / len(self.tok_s_per_device)

    @property
    def duration_s(self) -> float:
        return math.fsum(r.summary.duration_s for r in self.runs)

    @property
    def requests(self) -> int:
        return sum(r.summary.completed for r in self.runs)


@dataclass
class AliPrefillResult:
    input_tok_s_per_device: dict[int, float]
    runs: dict[int, LoadRun]
    """The last repeat of each length (its workload and error rate are what the judge records)."""
    files: dict[str, Path] = field(default_factory=dict)
    lengths: dict[int, PrefillLength] = field(default_factory=dict)

    def as_json(self) -> list[dict[str, float]]:
        return [{str(length): round(value, 2) for length, value in self.input_tok_s_per_device.items()}]



def run_prefill(
    ctx: LoadContext, workload: AliPrefillConfig, devices: int | None = None, name: str = "ali_prefill",
    clock: Any = time.monotonic,
) -> AliPrefillResult:
    """Input throughput per accelerator at each input length (one output token per request), each length
    repeated until its interval is tight or a limit is reached. Raises InvalidRun (after writing the files)
    when a length lacks evidence or the rates across lengths contradict each other."""
    lengths = list(workload.input_lens or PREFILL_INPUT_LENS)
    devices = devices or ctx.hw.hardware.devices
    measured = {length: _prefill_length(ctx, workload, length, devices, clock) for length in lengths}
    result = AliPrefillResult(
        input_tok_s_per_device={length: m.mean for length, m in measured.items()},
        runs={length: m.runs[-1] for length, m in measured.items()},
        lengths=measured,
    )
    problems = prefill_problems(measured, ctx.hw.evidence, workload)
    evidence = _prefill_evidence(measured, problems, wide_intervals(measured, workload))
    write_outputs(ctx, name, "prefill", result.files, result.as_json(), evidence, problems)
    return result


def _prefill_length(
    ctx: LoadContext, workload: AliPrefillConfig, length: int, devices: int, clock: Any
) -> PrefillLength:
    """Repeats of one input length until the interval is tight and long enough, or a limit is reached."""
    target = workload.target_half_width_rel or DEFAULT_TARGET_HALF_WIDTH_REL
    max_repeats = workload.max_repeats or DEFAULT_MAX_REPEATS
    budget_s = workload.repeat_budget_s or DEFAULT_REPEAT_BUDGET_S
    evidence = ctx.hw.evidence
    runs: list[LoadRun] = []
    rates: list[float] = []
    started = clock()
    base = dataset(ctx, workload, length, max(1, workload.output_len), workload.num_prompts)
    while True:
        # fresh prompts every repeat (another seed): a repeat of the same prompts would be prefix-cache hits
        ds = replace(base, seed=base.seed + len(runs))
        load = run_workload(
            ctx,
            ds,
            name=f"ali-prefill-{length}" + (f"-r{len(runs)}" if runs else ""),
            request_rate=workload.request_rate or math.inf,
            max_concurrency=workload.max_concurrency,
            # the first repeat warms up with a whole batch, untimed: a batch of a new token count can cost a
            # kernel compile the first time (on an H100, vLLM's first 4 x 512-token prefill took 1.2 s, the next
            # ones 60 ms); prompts of its own, so that it is a full prefill and leaves nothing cached
            warmup_requests=0 if runs else workload.num_prompts,
            warmup_fresh_prompts=True,
            settle_s=0.2 if runs else 1.0,
            prefix_cache=workload.prefix_cache,
        )
        runs.append(load)
        rates.append(load.summary["input_tok_s"] / devices)
        interval = t_interval(rates)
        long_enough = math.fsum(r.summary.duration_s for r in runs) >= evidence.min_duration_s
        if len(runs) >= MIN_REPEATS and long_enough and interval is not None and interval.half_width_rel <= target:
            return PrefillLength(length, runs, rates, interval, f"interval within {target:g} of the mean")
        if len(runs) >= max_repeats:
            return PrefillLength(length, runs, rates, interval, f"max_repeats ({max_repeats})")
        if clock() - started >= budget_s:
            return PrefillLength(length, runs, rates, interval, f"repeat_budget_s ({budget_s:g} s)")


def wide_intervals(measured: dict[int, PrefillLength], workload: AliPrefillConfig) -> list[str]:
    """Notes on the lengths a limit stopped before their interval was within the target (they stand)."""
    target = workload.target_half_width_rel or DEFAULT_TARGET_HALF_WIDTH_REL
    return [
        f"input_len {length}: interval {m.interval.text()} is +-{m.interval.half_width_rel:.1%} of the mean after "
        f"{len(m.runs)} repeats of {workload.num_prompts} requests, wider than the target +-{target:.1%} "
        f"(stopped: {m.stopped}); a quieter host, more num_prompts or max_repeats tighten it"
        for length, m in measured.items()
        if m.interval is not None and m.interval.half_width_rel > target
    ]


def prefill_problems(measured: dict[int, PrefillLength], evidence: Evidence, workload: AliPrefillConfig) -> list[str]:
    """Lengths whose repeats were too few or too short, and rates across lengths that no batch cost explains."""
    target = workload.target_half_width_rel or DEFAULT_TARGET_HALF_WIDTH_REL
    problems = []
    for length, m in measured.items():
        missing = shortfall(duration_s=m.duration_s, samples=m.requests, min_duration_s=evidence.min_duration_s,
                            min_samples=evidence.min_samples, what="requests")
        if missing or m.interval is None:
            problems.append(
                f"input_len {length}: {len(m.runs)} repeat(s) of {workload.num_prompts} requests, "
                f"{missing or 'no interval (one repeat)'}, target +-{target:.1%} (stopped: {m.stopped}); raise "
                "num_prompts, max_repeats or repeat_budget_s of the entry"
            )
    ordered = sorted(measured)
    for short, long in pairwise(ordered):
        a, b = measured[short].interval, measured[long].interval
        if a is None or b is None:
            continue
        most, least = b.high / a.low if a.low > 0 else math.inf, b.low / a.high if a.high > 0 else 0.0
        if least > long / short or most < short / long:
            problems.append(
                f"prefill rates contradict each other: {measured[short].mean:.4g} tok/s at {short} tokens and "
                f"{measured[long].mean:.4g} tok/s at {long} (ratio {measured[long].mean / measured[short].mean:.3g});"
                f" a batch of longer prompts cannot take less time, nor more than quadratically longer, so the "
                f"ratio must lie in [{short / long:.3g}, {long / short:.3g}]: a warm-up or cache effect, or too "
                "short runs; raise num_prompts"
            )
    return problems


def _prefill_evidence(measured: dict[int, PrefillLength], problems: list[str], notes: list[str]) -> dict[str, Any]:
    return {
        "input_lens": {
            str(length): {
                "input_tok_s_per_device": round(m.mean, 4),
                "interval": None if m.interval is None else m.interval.as_dict(),
                "repeats": len(m.runs),
                "repeat_tok_s_per_device": [round(v, 4) for v in m.tok_s_per_device],
                "requests": m.requests,
                "duration_s": round(m.duration_s, 4),
                "stopped": m.stopped,
            }
            for length, m in measured.items()
        },
        "invalid": problems,
        "notes": notes,
    }


def run_prefill_workload(ctx: LoadContext, name: str, workload: AliPrefillConfig) -> AliPrefillResult:
    """The prefill method."""
    return run_prefill(ctx, workload, name=name)


def judge_prefill(result: AliPrefillResult, judge: Judge) -> None:
    """Input throughput per accelerator at each input length against the floor (the repeats' mean, the repeats
    its samples); each repeat's error rate."""
    for length, value in result.input_tok_s_per_device.items():
        measured = result.lengths.get(length)
        run = result.runs[length] if measured is None else measured.runs[0]  # the first repeat's workload
        limit = judge.limit("input_tok_s_per_device")
        judge.gate.record(
            "input_tok_s_per_device",
            value,
            samples=[] if measured is None else measured.tok_s_per_device,
            sample_count=1 if measured is None else len(measured.runs),
            limit=None if limit is None else limit.value,
            limit_source="" if limit is None else limit.source,
            workload={**run.workload, "input_len": length},
            extra={} if measured is None or measured.interval is None else {
                "interval": measured.interval.as_dict(), "requests": measured.requests},
        )
        repeats = [run] if measured is None else measured.runs
        sent = sum(len(r.records) for r in repeats)
        failed = sum(r.summary.failed for r in repeats)
        judge.record(run, "error_rate", judge.slo_limit("error_rate"), value=failed / sent if sent else 0.0,
                     workload={**run.workload, "input_len": length})
        record_expert_load(judge.gate, repeats[-1])
