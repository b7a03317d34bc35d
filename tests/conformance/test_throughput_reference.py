"""This suite's numbers against the official tool's: sglang.bench_serving on the same workload, same engine.

The SLO workload runs with both clients, alternately (ours, sglang, ours, sglang) so drift of the engine or
the
host hits both alike; the mean of each client's runs is compared. TTFT, TPOT and ITL means and the output
token throughput must agree within 3%. The sglang client runs in a venv of its own, created on first use
(minutes); this test is marked ``slow``.
"""

from __future__ import annotations

import math
import statistics

import pytest

from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.gate import Gate
from pytest_dsbench.load.api import LoadContext, random_dataset, run_workload, slo_workload
from pytest_dsbench.load.runner import LoadRun
from pytest_dsbench.load.sglang_bridge import ReferenceToolError, run_sglang
from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.thresholds import HwProfile

pytestmark = [pytest.mark.throughput, pytest.mark.slow]

AGREEMENT_PCT = 3.0
COMPARED = ("ttft_ms_mean", "tpot_ms_mean", "itl_ms_mean", "output_tok_s")
ROUNDS = 2


def test_metrics_agree_with_sglang_bench_serving(
    dsbench_engine: EngineInfo, dsbench_options: DsbenchOptions, hw_profile: HwProfile, dsbench_gate: Gate
) -> None:
    if dsbench_options.load_generator == "sglang":
        pytest.skip("--load-generator sglang: both sides would be sglang.bench_serving")
    ctx = LoadContext(dsbench_engine, dsbench_options, hw_profile)
    entry = slo_workload(hw_profile)
    if entry is None:
        pytest.skip(f"{hw_profile.path} has no [throughput.*] workload to compare on")
    name, baseline = entry
    dataset = random_dataset(
        ctx, baseline.input_len, baseline.output_len, baseline.num_prompts, seed=baseline.seed or 1
    )
    rate = baseline.request_rate or math.inf
    ours: list[LoadRun] = []
    theirs: list[LoadRun] = []
    for round_ in range(ROUNDS):
        run = run_workload(
            ctx,
            dataset,
            name=f"reference-{name}-dsbench-{round_}",
            request_rate=rate,
            max_concurrency=baseline.max_concurrency,
            include_usage=False,
        )
        ours.append(run)
        try:
            theirs.append(
                run_sglang(
                    run.config, ctx.tokenizer_spec, ctx.results_dir, f"reference-{name}-sglang-{round_}"
                )
            )
        except ReferenceToolError as exc:
            pytest.fail(str(exc), pytrace=False)
    for metric in COMPARED:
        a = statistics.fmean(r.summary[metric] for r in ours)
        b = statistics.fmean(r.summary[metric] for r in theirs)
        diff_pct = abs(a - b) / abs(b) * 100 if b else math.inf
        dsbench_gate.record(
            "reference_diff_pct",
            diff_pct,
            sample_count=ROUNDS,
            limit=AGREEMENT_PCT,
            limit_source=f"{metric}: this suite {a:.4g} vs sglang.bench_serving {b:.4g}",
            workload={**ours[0].workload, "metric": metric},
        )
    dsbench_gate.check()
