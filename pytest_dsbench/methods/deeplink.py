"""Seed 000, DeepLink high-throughput evaluation: sglang.bench_serving on the random data set.

The seed's command: ``--dataset-name random --random-range-ratio 1 --seed 42 --random-input-len IN
--random-output-len OUT --num-prompts N`` (request rate inf, no concurrency limit), and the result is the
block's "Output token throughput (tok/s)". The run's outputs are written as the seed keeps them:
``speed_in{IN}_out{OUT}_n{N}.log`` (the console block) and ``...jsonl`` (sglang's ``--output-file`` record).

Judged: ``output_tok_s`` against the workload's ``output_tok_s_min``, and the error rate against ``[slo]
error_rate_max``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from pytest_dsbench import _atomic
from pytest_dsbench.load.api import LoadContext, run_workload
from pytest_dsbench.load.datasets import DatasetSpec
from pytest_dsbench.load.formats import sglang_record, sglang_text
from pytest_dsbench.load.runner import LoadRun
from pytest_dsbench.methods.entry import Judge
from pytest_dsbench.workloads.deeplink import DeeplinkConfig

SEED = 42
RANGE_RATIO = 1.0


@dataclass
class DeeplinkResult:
    run: LoadRun
    output_tok_s: float
    files: dict[str, Path] = field(default_factory=dict)


def dataset(ctx: LoadContext, workload: DeeplinkConfig) -> DatasetSpec:
    return DatasetSpec(
        name="random",
        num_prompts=workload.num_prompts,
        input_len=workload.input_len,
        output_len=workload.output_len,
        range_ratio=RANGE_RATIO if workload.range_ratio is None else workload.range_ratio,
        seed=SEED if workload.seed is None else workload.seed,
        dataset_path=ctx.sharegpt_path,
    )


def write_outputs(run: LoadRun, folder: Path, backend: str) -> dict[str, Path]:
    """The seed's two files for one run."""
    ds = run.config.dataset
    stem = f"speed_in{ds.input_len}_out{ds.output_len}_n{ds.num_prompts}"
    import json

    log = folder / f"{stem}.log"
    jsonl = folder / f"{stem}.jsonl"
    _atomic.write_text(log, sglang_text(run, backend))
    _atomic.write_text(jsonl, json.dumps(sglang_record(run, backend)) + "\n")
    return {"log": log, "jsonl": jsonl}


def run(ctx: LoadContext, name: str, workload: DeeplinkConfig) -> DeeplinkResult:
    """Run the DeepLink workload and write its outputs under ``<artifacts>/load/methods/deeplink``."""
    load = run_workload(
        ctx,
        dataset(ctx, workload),
        name=f"deeplink-{name}",
        request_rate=workload.request_rate or math.inf,
        max_concurrency=workload.max_concurrency,
        prefix_cache=workload.prefix_cache,
    )
    files = write_outputs(load, ctx.results_dir / "methods" / "deeplink", ctx.engine.name)
    return DeeplinkResult(run=load, output_tok_s=load.summary["output_tok_s"], files=files)


def judge(result: DeeplinkResult, judge: Judge) -> None:
    """Output throughput against the workload's floor; the error rate against the SLO's."""
    judge.record(result.run, "output_tok_s", value=result.output_tok_s)
    judge.record_health(result.run)
