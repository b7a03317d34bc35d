"""Seed 003, the "ali" decode evaluation: TPOT and decode throughput per running batch size.

Decode: for each batch size B a random workload (range ratio 1) runs at max-concurrency B; its mean TPOT is
the first table. The decode throughput per running batch size comes from the client's own token timeline
(:mod:`pytest_dsbench.load.timeline`: tokens emitted per second in the time where exactly B requests were
decoding, the probes pooled), so it needs nothing from the engine. Per size, the tokens emitted at B over the
time spent at B stands under the seed's key ``median`` (the seed's is the median of logged interval rates; with
the time cut into equal slices of at least 16 decode steps ours is the slices' mean, which stays consistent with
TPOT where the token stream is bursty: on a CPU shared by other work the slices' median read half the mean), with
``throughput_per_gpu`` after division by the decode accelerators, ``throughput_per_user`` after division by the
size, and ``gen_througput_samples`` the slices behind it. Output, exactly as seed 003's
``ali_decode.json``::

    [{"1": 7.06, "2": 9.37, ...},
     {"1": {"median": 141.67, "throughput_per_gpu": 141.67, "throughput_per_user": 141.67,
            "gen_througput_samples": 419}, ...}]

(the key ``gen_througput_samples`` is spelled as the seed spells it). The engine's own decode-throughput log
lines written meanwhile (:mod:`pytest_dsbench.methods.logparse`: SGLang's ``Decode batch``, vLLM's ``Avg generation
throughput`` every ``VLLM_LOG_STATS_INTERVAL`` s) are the cross-check: per size their median and the difference
from the client's figure go to ``ali_decode_evidence.json`` with each figure's interval and decode time. vLLM's
figure is the tokens of a whole logging interval over its length, idle time and other batch sizes included, so
it reads low wherever the interval was not all spent at the size it reports.

Prefill (:mod:`pytest_dsbench.methods.ali_prefill`): input tok/s per accelerator at each input length, the mean
of repeats until its interval is tight; ``ali_prefill.json`` is ``[{"1024": 25574.94, "2048": ..., "4096": ...}]``.

Evidence and consistency (the hardware profile's ``[evidence]``), each an INVALID run naming the fix: a probed
batch size decoded for less than ``min_duration_s`` or in fewer than ``min_samples`` slices; per-user decode
tok/s at B within the B probe (its own token timeline, not the pooled figure) disagreeing with 1000 / mean TPOT
of the B probe by more than ``consistency_tolerance_pct``.

Judged: each batch size's mean TPOT (recorded, no limit) and error rate, and each running batch size's
``decode_tok_s_per_device`` (recorded, its slices the samples).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_dsbench import _atomic
from pytest_dsbench.errors import InvalidRun
from pytest_dsbench.evidence import Interval, bootstrap_interval, shortfall
from pytest_dsbench.load.api import LoadContext, run_workload
from pytest_dsbench.load.datasets import DatasetSpec
from pytest_dsbench.load.runner import LoadRun
from pytest_dsbench.load.timeline import SLICE_S, STEPS_PER_SLICE, BatchDecode, decode_by_batch_size
from pytest_dsbench.methods.entry import Judge
from pytest_dsbench.methods.logparse import DecodeSample, LogCursor, LogFormat, parse_lines
from pytest_dsbench.thresholds import Evidence
from pytest_dsbench.workloads.ali import DECODE_BATCH_SIZES, AliDecodeConfig
from pytest_dsbench.workloads.entry import WorkloadEntry

SAMPLES_KEY = "gen_througput_samples"  # sic: seed 003's spelling
VLLM_INTERVAL_NOTE = (
    "vLLM's 'Avg generation throughput' is the tokens of its whole logging interval (VLLM_LOG_STATS_INTERVAL) "
    "over the interval's length, idle time and other batch sizes included, with the running count at its end: "
    "it reads low wherever that interval was not all spent decoding at the size it reports"
)


@dataclass
class AliDecodeResult:
    tpot_ms: dict[int, float]
    table: dict[int, dict[str, float]]
    """The client's figures per running batch size (seed 003's second dictionary)."""
    samples: list[DecodeSample]
    """The engine's logged decode lines (the cross-check)."""
    runs: dict[int, LoadRun]
    log_paths: list[Path]
    log_format: LogFormat = "auto"
    files: dict[str, Path] = field(default_factory=dict)
    timeline: dict[int, BatchDecode] = field(default_factory=dict)
    intervals: dict[int, Interval | None] = field(default_factory=dict)
    crosscheck: dict[int, dict[str, Any]] = field(default_factory=dict)
    devices: int = 1
    probe_per_user_tok_s: dict[int, float] = field(default_factory=dict)
    """Per probed size B: tok/s per user at B within the B probe alone (the table pools every probe's time at B,
    e.g. the tails of larger probes), the figure that the B probe's own TPOT is checked against."""

    def as_json(self) -> list[dict[str, Any]]:
        return decode_json(self.tpot_ms, self.table)


def decode_table(
    samples: Sequence[DecodeSample], devices: int, order: Sequence[int] = ()
) -> dict[int, dict[str, float]]:
    """Per running batch size the engine logged: median logged throughput, per accelerator, per user, and the
    sample count (the cross-check's table, in seed 003's row shape).

    Keys come in ``order`` first (the probed batch sizes that have samples), then in order of first
    appearance.
    """
    import numpy as np

    by_size: dict[int, list[float]] = {}
    for s in samples:
        by_size.setdefault(s.running, []).append(s.gen_tok_s)
    keys = [b for b in order if b in by_size] + [b for b in by_size if b not in order]
    return {size: _row(float(np.median(by_size[size])), size, devices, len(by_size[size])) for size in keys}


def _row(median: float, size: int, devices: int, samples: int) -> dict[str, float]:
    return {
        "median": median,
        "throughput_per_gpu": median / devices,
        "throughput_per_user": median / size,
        SAMPLES_KEY: samples,
    }


def client_table(
    timeline: dict[int, BatchDecode], devices: int, order: Sequence[int] = ()
) -> dict[int, dict[str, float]]:
    """Per running batch size with at least one slice of decode time: tokens / decode time there (the mean of
    its equal slices), per accelerator, per user, and the slices behind it; probed sizes first, then the others
    by size."""
    sizes = [b for b in order if b in timeline] + [b for b in timeline if b not in order]
    return {
        b: _row(timeline[b].tok_s, b, devices, len(timeline[b].slice_tok_s))
        for b in sizes
        if timeline[b].slice_tok_s
    }


def decode_json(tpot_ms: dict[int, float], table: dict[int, dict[str, float]]) -> list[dict[str, Any]]:
    """Seed 003's two-dictionary decode result (TPOT rounded to 2 decimals as the seed shows)."""
    return [
        {str(b): round(v, 2) for b, v in tpot_ms.items()},
        {str(b): {**row, SAMPLES_KEY: int(row[SAMPLES_KEY])} for b, row in table.items()},
    ]


def crosscheck(
    table: dict[int, dict[str, float]], logged: dict[int, dict[str, float]], log_format: LogFormat
) -> dict[int, dict[str, Any]]:
    """Per client batch size: the engine log's median there, its samples and its difference from the client's
    figure in percent (None where the log has no line at that size)."""
    out: dict[int, dict[str, Any]] = {}
    for size, row in table.items():
        log = logged.get(size)
        diff = None if log is None or not row["median"] else (log["median"] - row["median"]) / row["median"] * 100
        out[size] = {
            "client_tok_s": row["median"],
            "log_tok_s": None if log is None else log["median"],
            "log_samples": 0 if log is None else int(log[SAMPLES_KEY]),
            "log_diff_pct": None if diff is None else round(diff, 2),
        }
        if log_format == "vllm" and diff is not None:
            out[size]["why"] = VLLM_INTERVAL_NOTE
    return out


def dataset(ctx: LoadContext, workload: WorkloadEntry, input_len: int, output_len: int, n: int) -> DatasetSpec:
    return DatasetSpec(
        name="random",
        num_prompts=n,
        input_len=input_len,
        output_len=output_len,
        range_ratio=1.0 if workload.range_ratio is None else workload.range_ratio,
        seed=1 if workload.seed is None else workload.seed,
        dataset_path=ctx.sharegpt_path,
    )


def run_decode(
    ctx: LoadContext,
    workload: AliDecodeConfig,
    log_paths: Sequence[Path],
    log_format: LogFormat = "auto",
    devices: int | None = None,
    name: str = "ali_decode",
) -> AliDecodeResult:
    """Probe each batch size; the decode throughput per running batch size from the probes' token timelines,
    the engine's lines logged meanwhile as the cross-check. Raises InvalidRun (after writing the files) when a
    probed size has too little decode time or its per-user tok/s contradicts its TPOT."""
    sizes = list(workload.batch_sizes or DECODE_BATCH_SIZES)
    devices = devices or ctx.hw.hardware.devices
    cursor = LogCursor(log_paths)
    tpot: dict[int, float] = {}
    runs: dict[int, LoadRun] = {}
    for size in sizes:
        ds = dataset(ctx, workload, workload.input_len, workload.output_len, max(size, workload.num_prompts))
        load = run_workload(
            ctx, ds, name=f"ali-decode-bs{size}", max_concurrency=size, prefix_cache=workload.prefix_cache
        )
        runs[size] = load
        tpot[size] = load.summary["tpot_ms_mean"]
    samples = parse_lines(cursor.new_lines(), log_format)
    timeline = decode_by_batch_size(run.records for run in runs.values())
    evidence = ctx.hw.evidence
    table = {
        b: row
        for b, row in client_table(timeline, devices, sizes).items()
        if b in sizes or _decode_shortfall(timeline[b], evidence.min_duration_s, evidence.min_samples) is None
    }  # sizes no probe asked for are shown only where they have the evidence a probed one needs
    result = AliDecodeResult(
        tpot_ms=tpot, table=table, samples=samples, runs=runs, log_paths=list(log_paths), log_format=log_format,
        timeline=timeline, devices=devices, probe_per_user_tok_s=_probe_per_user_tok_s(runs),
        intervals={b: bootstrap_interval(timeline[b].slice_tok_s, "mean") for b in table},
        crosscheck=crosscheck(table, decode_table(samples, devices, sizes), log_format),
    )
    problems = decode_problems(result, sizes, evidence)
    write_outputs(ctx, name, "decode", result.files, result.as_json(), _decode_evidence(result, problems), problems)
    return result


def _probe_per_user_tok_s(runs: dict[int, LoadRun]) -> dict[int, float]:
    out = {}
    for size, run in runs.items():
        own = decode_by_batch_size([run.records]).get(size)
        if own is not None and own.decode_s > 0:
            out[size] = own.tok_s / size
    return out


def write_outputs(
    ctx: LoadContext, name: str, kind: str, files: dict[str, Path], payload: Any, evidence: Any, problems: list[str]
) -> None:
    """Write seed 003's ``ali_{kind}.json`` and ``ali_{kind}_evidence.json`` into ``files``, then raise
    InvalidRun naming every problem (the files stay, for the engineer who fixes the entry)."""
    folder = ctx.results_dir / "methods" / "ali"
    files["json"] = folder / f"ali_{kind}.json"
    _atomic.write_text(files["json"], dumps(payload))
    files["evidence"] = folder / f"ali_{kind}_evidence.json"
    _atomic.write_json(files["evidence"], evidence)
    if problems:
        raise InvalidRun(
            f"INVALID ali {kind} run ({ctx.hw.where(f'[throughput.{name}]')}): " + "; ".join(problems)
            + f" (evidence: {files['evidence']})"
        )


def _decode_shortfall(entry: BatchDecode | None, min_duration_s: float, min_samples: int) -> str | None:
    if entry is None:
        return "no request decoded at this batch size"
    return shortfall(duration_s=entry.decode_s, samples=len(entry.slice_tok_s), min_duration_s=min_duration_s,
                     min_samples=min_samples, what="decode slices")


def decode_problems(result: AliDecodeResult, sizes: Sequence[int], evidence: Evidence) -> list[str]:
    """Why the decode figures cannot be trusted: missing evidence at a probed size, or per-user tok/s that
    contradicts the TPOT of the same probe (tok/s per user ~ 1000 / TPOT in ms)."""
    problems = []
    tolerance_pct = evidence.consistency_tolerance_pct
    for size in sizes:
        missing = _decode_shortfall(result.timeline.get(size), evidence.min_duration_s, evidence.min_samples)
        if missing is not None:
            problems.append(
                f"batch size {size}: {missing}; raise num_prompts (each request decodes at the probed size "
                f"about output_len steps) or output_len of the entry"
            )
            continue
        per_user = result.probe_per_user_tok_s.get(size, result.table[size]["throughput_per_user"])
        from_tpot = 1000.0 / result.tpot_ms[size] if result.tpot_ms[size] > 0 else 0.0
        if from_tpot <= 0 or abs(per_user - from_tpot) / from_tpot * 100 > tolerance_pct:
            problems.append(
                f"batch size {size}: per-user decode {per_user:.4g} tok/s from the probe's token timeline contradicts "
                f"1000 / mean TPOT {result.tpot_ms[size]:.4g} ms = {from_tpot:.4g} tok/s by more than "
                f"[evidence] consistency_tolerance_pct {tolerance_pct:g} %; the records are in "
                f"{result.runs[size].raw_path}"
            )
    return problems


def _decode_evidence(result: AliDecodeResult, problems: list[str]) -> dict[str, Any]:
    rows = {}
    for size, row in result.table.items():
        interval = result.intervals.get(size)
        entry = result.timeline[size]
        tpot = result.tpot_ms.get(size)
        rows[str(size)] = {
            "decode_s": round(entry.decode_s, 4),
            "tokens": round(entry.tokens, 2),
            "tok_s": round(entry.tok_s, 4),
            "slice_median_tok_s": round(statistics.median(entry.slice_tok_s), 4),
            "slices": len(entry.slice_tok_s),
            "slice_s": round(entry.slice_s, 4),
            "interval_tok_s": None if interval is None else interval.as_dict(),
            "per_user_tok_s": row["throughput_per_user"],
            "probe_per_user_tok_s": (None if size not in result.probe_per_user_tok_s
                                     else round(result.probe_per_user_tok_s[size], 4)),
            "per_user_from_tpot_tok_s": None if not tpot else round(1000.0 / tpot, 4),
            "tpot_samples": len(result.runs[size].summary.samples.get("tpot", [])) if size in result.runs else None,
            "engine_log": result.crosscheck.get(size),
        }
    return {
        "min_slice_s": SLICE_S,
        "steps_per_slice": STEPS_PER_SLICE,
        "devices": result.devices,
        "engine_log_lines": len(result.samples),
        "engine_log_format": result.log_format,
        "batch_sizes": rows,
        "invalid": problems,
    }


def run_decode_workload(ctx: LoadContext, name: str, workload: AliDecodeConfig) -> AliDecodeResult:
    """The decode method; the engine's own log (the suite's in start mode, ``--engine-log`` in attach) is the
    cross-check, and without one the figures stand alone."""
    logs = [p for p in ctx.engine.log_paths if p.is_file()]
    return run_decode(ctx, workload, logs, log_format=ctx.engine.behaviour.decode_log_format, name=name)


def judge_decode(result: AliDecodeResult, judge: Judge) -> None:
    """TPOT and error rate per batch size; the decode throughput per running batch size with its slices, its
    interval and the engine log's figure beside it."""
    for size, run in result.runs.items():
        judge.record(run, "tpot_ms_mean", value=result.tpot_ms[size], workload={**run.workload, "batch_size": size})
        judge.record_health(run)
    for size, row in result.table.items():
        interval = result.intervals.get(size)
        per_device = 1.0 / result.devices
        judge.gate.record(
            "decode_tok_s_per_device",
            row["throughput_per_gpu"],
            samples=[v * per_device for v in result.timeline[size].slice_tok_s],
            sample_count=int(row[SAMPLES_KEY]),
            workload={"running_batch_size": size, "source": "client token timeline"},
            extra={
                "interval": None if interval is None else interval.shifted(row["throughput_per_gpu"]).as_dict(),
                "engine_log": result.crosscheck.get(size),
            },
        )


def dumps(payload: Any) -> str:
    import json

    return json.dumps(payload, indent=4) + "\n"
