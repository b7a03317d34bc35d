"""``method = "random"``: one load run of the workload as written (e.g. seed 001's table, seed 004's example).

The run takes its prompts from the entry's data set (random prompts by default, sglang's range-ratio
convention, ratio 1 unless the entry says otherwise) at its request rate, burstiness and max concurrency.
Judged: ``output_tok_s``, ``total_tok_s`` and ``qpm`` against the floors the entry sets (``{metric}_min``), and
the error rate against ``[slo] error_rate_max``. An entry without a floor is measured and recorded (for history
and the regression gate), and still fails when requests fail.
"""

from __future__ import annotations

from dataclasses import dataclass

from pytest_dsbench.load.api import LoadContext, require_evidence, run_workload, workload_arrivals, workload_dataset
from pytest_dsbench.load.runner import LoadRun
from pytest_dsbench.methods.entry import Judge
from pytest_dsbench.workloads.random import RandomConfig

FLOORS = ("output_tok_s", "total_tok_s", "qpm")
"""The metrics a random workload can set a floor on, in the order they are judged."""


@dataclass
class RandomResult:
    run: LoadRun


def run(ctx: LoadContext, name: str, workload: RandomConfig) -> RandomResult:
    """The workload's one load run (raw records under ``<artifacts>/load/throughput-NAME.jsonl``)."""
    dataset = workload_dataset(ctx, name, workload)
    load = run_workload(ctx, dataset, name=f"throughput-{name}", **workload_arrivals(workload))
    require_evidence(ctx, load, ctx.hw.where(f"[throughput.{name}]"))
    return RandomResult(load)


def judge(result: RandomResult, judge: Judge) -> None:
    """Each floor the workload sets; the error rate against the SLO's."""
    for metric in FLOORS:
        judge.record(result.run, metric)
    judge.record_health(result.run)
