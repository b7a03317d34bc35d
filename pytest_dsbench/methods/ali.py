"""Seed 003, the "ali" evaluation: decode TPOT and server-logged decode throughput per batch size; prefill.

Decode: for each batch size B a random workload (range ratio 1) runs at max-concurrency B; its mean TPOT is
the first table. The engine's own decode-throughput log lines written during those runs
(:mod:`pytest_dsbench.methods.logparse`) are grouped by the running batch size they report; per size the
median is ``throughput_per_gpu`` after division by the decode accelerators and ``throughput_per_user`` after
division by the size. Output, exactly as seed 003's ``ali_decode.json``::

    [{"1": 7.06, "2": 9.37, ...},
     {"1": {"median": 141.67, "throughput_per_gpu": 141.67, "throughput_per_user": 141.67,
            "gen_througput_samples": 419}, ...}]

(the key ``gen_througput_samples`` is spelled as the seed spells it). Prefill: per input length L a workload
with one output token; the input token throughput per accelerator is ``ali_prefill.json``: ``[{"1024":
25574.94, "2048": ..., "4096": ...}]``. In the hardware profile, an ``ali_decode`` entry lists the probed
``batch_sizes`` and an ``ali_prefill`` entry its ``input_lens``.

Judged: decode, each batch size's mean TPOT (recorded, no limit) and error rate, each logged running batch
size's ``decode_tok_s_per_device`` (recorded), and a failure when the engine logged no decode throughput at
all; prefill, ``input_tok_s_per_device`` at each input length against the workload's
``input_tok_s_per_device_min`` and each run's error rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_dsbench import _atomic
from pytest_dsbench.load.api import LoadContext, run_workload
from pytest_dsbench.load.datasets import DatasetSpec
from pytest_dsbench.load.runner import LoadRun
from pytest_dsbench.methods.entry import Judge, MethodUnavailable
from pytest_dsbench.methods.logparse import DecodeSample, LogCursor, LogFormat, parse_lines
from pytest_dsbench.workloads.ali import DECODE_BATCH_SIZES, PREFILL_INPUT_LENS, AliDecodeConfig, AliPrefillConfig
from pytest_dsbench.workloads.entry import WorkloadEntry

SAMPLES_KEY = "gen_througput_samples"  # sic: seed 003's spelling


@dataclass
class AliDecodeResult:
    tpot_ms: dict[int, float]
    table: dict[int, dict[str, float]]
    samples: list[DecodeSample]
    runs: dict[int, LoadRun]
    log_paths: list[Path]
    log_format: LogFormat = "auto"
    files: dict[str, Path] = field(default_factory=dict)

    def as_json(self) -> list[dict[str, Any]]:
        return decode_json(self.tpot_ms, self.table)


@dataclass
class AliPrefillResult:
    input_tok_s_per_device: dict[int, float]
    runs: dict[int, LoadRun]
    files: dict[str, Path] = field(default_factory=dict)

    def as_json(self) -> list[dict[str, float]]:
        return [{str(length): round(value, 2) for length, value in self.input_tok_s_per_device.items()}]


def decode_table(
    samples: Sequence[DecodeSample], devices: int, order: Sequence[int] = ()
) -> dict[int, dict[str, float]]:
    """Per running batch size: median logged throughput, per accelerator, per user, and the sample count.

    Keys come in ``order`` first (the probed batch sizes that have samples), then in order of first
    appearance.
    """
    import numpy as np

    by_size: dict[int, list[float]] = {}
    for s in samples:
        by_size.setdefault(s.running, []).append(s.gen_tok_s)
    keys = [b for b in order if b in by_size] + [b for b in by_size if b not in order]
    table: dict[int, dict[str, float]] = {}
    for size in keys:
        median = float(np.median(by_size[size]))
        table[size] = {
            "median": median,
            "throughput_per_gpu": median / devices,
            "throughput_per_user": median / size,
            SAMPLES_KEY: len(by_size[size]),
        }
    return table


def decode_json(tpot_ms: dict[int, float], table: dict[int, dict[str, float]]) -> list[dict[str, Any]]:
    """Seed 003's two-dictionary decode result (TPOT rounded to 2 decimals as the seed shows)."""
    return [
        {str(b): round(v, 2) for b, v in tpot_ms.items()},
        {str(b): {**row, SAMPLES_KEY: int(row[SAMPLES_KEY])} for b, row in table.items()},
    ]


def _dataset(ctx: LoadContext, workload: WorkloadEntry, input_len: int, output_len: int, n: int) -> DatasetSpec:
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
) -> AliDecodeResult:
    """Probe each batch size, then parse the decode lines the engine logged meanwhile."""
    sizes = list(workload.batch_sizes or DECODE_BATCH_SIZES)
    cursor = LogCursor(log_paths)
    tpot: dict[int, float] = {}
    runs: dict[int, LoadRun] = {}
    for size in sizes:
        ds = _dataset(ctx, workload, workload.input_len, workload.output_len, max(size, workload.num_prompts))
        load = run_workload(
            ctx, ds, name=f"ali-decode-bs{size}", max_concurrency=size, prefix_cache=workload.prefix_cache
        )
        runs[size] = load
        tpot[size] = load.summary["tpot_ms_mean"]
    samples = parse_lines(cursor.new_lines(), log_format)
    table = decode_table(samples, devices or ctx.hw.hardware.devices, sizes)
    result = AliDecodeResult(
        tpot_ms=tpot, table=table, samples=samples, runs=runs, log_paths=list(log_paths), log_format=log_format
    )
    path = ctx.results_dir / "methods" / "ali" / "ali_decode.json"
    _atomic.write_text(path, _dumps(result.as_json()))
    result.files["json"] = path
    return result


def run_prefill(ctx: LoadContext, workload: AliPrefillConfig, devices: int | None = None) -> AliPrefillResult:
    """Input throughput per accelerator at each input length (one output token per request)."""
    lengths = list(workload.input_lens or PREFILL_INPUT_LENS)
    per_device: dict[int, float] = {}
    runs: dict[int, LoadRun] = {}
    for length in lengths:
        ds = _dataset(ctx, workload, length, max(1, workload.output_len), workload.num_prompts)
        load = run_workload(
            ctx,
            ds,
            name=f"ali-prefill-{length}",
            request_rate=workload.request_rate or math.inf,
            max_concurrency=workload.max_concurrency,
            # a whole batch once, untimed: a batch of a new token count can cost a kernel compile the first
            # time (on an H100, vLLM's first 4 x 512-token prefill took 1.2 s, the next ones 60 ms); prompts
            # of its own, so that it is a full prefill and leaves nothing of the measured prompts cached
            warmup_requests=workload.num_prompts,
            warmup_fresh_prompts=True,
            prefix_cache=workload.prefix_cache,
        )
        runs[length] = load
        per_device[length] = load.summary["input_tok_s"] / (devices or ctx.hw.hardware.devices)
    result = AliPrefillResult(input_tok_s_per_device=per_device, runs=runs)
    path = ctx.results_dir / "methods" / "ali" / "ali_prefill.json"
    _atomic.write_text(path, _dumps(result.as_json()))
    result.files["json"] = path
    return result


def run_decode_workload(ctx: LoadContext, name: str, workload: AliDecodeConfig) -> AliDecodeResult:
    """The decode method against the engine's own log (the suite's in start mode, ``--engine-log`` in attach)."""
    logs = [p for p in ctx.engine.log_paths if p.is_file()]
    if not logs:
        raise MethodUnavailable("ali decode reads the engine's log: pass --engine-log PATH in attach mode")
    return run_decode(ctx, workload, logs, log_format=ctx.engine.behaviour.decode_log_format)


def run_prefill_workload(ctx: LoadContext, name: str, workload: AliPrefillConfig) -> AliPrefillResult:
    """The prefill method (``name`` is not needed: its runs are named by input length)."""
    return run_prefill(ctx, workload)


def judge_decode(result: AliDecodeResult, judge: Judge) -> None:
    """TPOT and error rate per batch size, logged decode throughput per running batch size, and a failure when
    the engine logged none."""
    for size, run in result.runs.items():
        judge.record(run, "tpot_ms_mean", value=result.tpot_ms[size], workload={**run.workload, "batch_size": size})
        judge.record_health(run)
    for size, row in result.table.items():
        judge.gate.record(
            "decode_tok_s_per_device",
            row["throughput_per_gpu"],
            sample_count=int(row[SAMPLES_KEY]),
            workload={"running_batch_size": size},
        )
    if not result.samples:
        judge.gate.fail(
            f"no decode-throughput line in {', '.join(map(str, result.log_paths))} while the ali decode runs ran "
            f"(expected {result.log_format}-format lines such as SGLang "
            "'Decode batch ... gen throughput' or vLLM/LMDeploy 'Avg generation throughput'; vLLM logs "
            "every VLLM_LOG_STATS_INTERVAL s and not with --disable-log-stats)"
        )


def judge_prefill(result: AliPrefillResult, judge: Judge) -> None:
    """Input throughput per accelerator at each input length against the floor; each run's error rate."""
    for length, value in result.input_tok_s_per_device.items():
        run = result.runs[length]
        judge.record(run, "input_tok_s_per_device", value=value, workload={**run.workload, "input_len": length})
        judge.record_health(run)


def _dumps(payload: Any) -> str:
    import json

    return json.dumps(payload, indent=4) + "\n"
