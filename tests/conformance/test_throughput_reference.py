"""This suite's numbers against the official tool's: sglang.bench_serving on the same workload, same engine.

Both clients run the SLO workload's lengths on identical terms: the ``random-ids`` data set (sglang's offline
construction, no shared prefixes) and every request due at once, so neither arrival draws nor prefix-cache
hits differ. Two arrangements:

* ``sequential`` (max-concurrency 1): each request meets an idle engine, so the engine's batching adds no
  spread: this is where the two clients' definitions and timestamps are compared. (Every round sends the same
  prompts, so after the warm-up their prefixes may be cached: alike for both clients.)
* ``loaded`` (the workload's own prompt count and max-concurrency): the engine batches, and which requests share
  a first step depends on arrival order at the millisecond, so TTFT varies from round to round on a busy host.

After one unrecorded warm-up run the clients alternate (ours, sglang, ours, ...) and each adjacent pair is
compared, so drift of the engine or the host hits both alike; the median relative difference of the pairs
must be within 3% for the TTFT, TPOT and ITL means and the output token throughput. A miss whose rounds
differ in both directions is noise, not a measured disagreement (``pytest_dsbench.load.agreement``): if every
miss is of that kind the test is skipped as inconclusive, naming each metric and its per-round differences; a
miss in the same direction in every round fails it. The sglang client runs in a venv of its
own, created on first use (minutes); this test is marked ``slow``.
"""

from __future__ import annotations

import math

import pytest

from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.gate import Gate
from pytest_dsbench.load.agreement import compare_rounds, inconclusive_only
from pytest_dsbench.load.api import LoadContext, run_workload, slo_workload
from pytest_dsbench.load.datasets import DatasetSpec
from pytest_dsbench.load.runner import LoadRun
from pytest_dsbench.load.sglang_bridge import ReferenceToolError, run_sglang
from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.thresholds import HwProfile

pytestmark = [pytest.mark.throughput, pytest.mark.slow]

AGREEMENT_PCT = 3.0
COMPARED = ("ttft_ms_mean", "tpot_ms_mean", "itl_ms_mean", "output_tok_s")
ROUNDS = 5
SEQUENTIAL_PROMPTS = 8
"""Requests per sequential round: each meets an idle engine, so a few give a steady mean."""


@pytest.mark.parametrize("arrangement", ["sequential", "loaded"])
def test_metrics_agree_with_sglang_bench_serving(
    arrangement: str,
    dsbench_engine: EngineInfo,
    dsbench_options: DsbenchOptions,
    hw_profile: HwProfile,
    dsbench_gate: Gate,
) -> None:
    if dsbench_options.load_generator == "sglang":
        pytest.skip("--load-generator sglang: both sides would be sglang.bench_serving")
    ctx = LoadContext(dsbench_engine, dsbench_options, hw_profile)
    entry = slo_workload(hw_profile)
    if entry is None:
        pytest.skip(f"{hw_profile.path} has no [throughput.*] workload to compare on")
    name, baseline = entry
    sequential = arrangement == "sequential"
    max_concurrency = 1 if sequential else baseline.max_concurrency
    dataset = DatasetSpec(
        name="random-ids",
        num_prompts=min(baseline.num_prompts, SEQUENTIAL_PROMPTS) if sequential else baseline.num_prompts,
        input_len=baseline.input_len,
        output_len=baseline.output_len,
        range_ratio=1.0,
        seed=baseline.seed or 1,
    )
    label = f"reference-{name}-{arrangement}"
    ours: list[LoadRun] = []
    theirs: list[LoadRun] = []

    def ours_once(run_name: str) -> LoadRun:
        return run_workload(
            ctx, dataset, name=run_name, request_rate=math.inf, max_concurrency=max_concurrency, include_usage=False
        )

    # one unrecorded run first: the engine's first batches after start-up are slower than its steady state
    ours_once(f"{label}-warmup")
    for round_ in range(ROUNDS):
        run = ours_once(f"{label}-dsbench-{round_}")
        ours.append(run)
        try:
            theirs.append(run_sglang(run.config, ctx.tokenizer_spec, ctx.results_dir, f"{label}-sglang-{round_}"))
        except ReferenceToolError as exc:
            pytest.fail(str(exc), pytrace=False)
    agreements = compare_rounds(
        [r.summary.values for r in ours], [r.summary.values for r in theirs], COMPARED, AGREEMENT_PCT
    )
    inconclusive = inconclusive_only(agreements)
    for agreement in agreements:
        dsbench_gate.record(
            "reference_diff_pct",
            agreement.diff_pct,
            sample_count=ROUNDS,
            # an inconclusive comparison is recorded, not judged: no limit, so no FAIL row for a skipped test
            limit=None if inconclusive else AGREEMENT_PCT,
            limit_source=f"{agreement.metric}, this suite vs sglang.bench_serving per round: {agreement.rounds_text()}",
            workload={**ours[0].workload, "metric": agreement.metric, "arrangement": arrangement},
            extra={"inconclusive": agreement.inconclusive, "round_diffs_pct": list(agreement.round_diffs_pct)},
        )
    if inconclusive:
        noisy = "; ".join(
            f"{a.metric} differs by {a.diff_pct:.1f}% (median), but the rounds point both ways: "
            + ", ".join(f"{d:+.1f}%" for d in a.round_diffs_pct)
            for a in agreements
            if a.inconclusive
        )
        pytest.skip(
            f"inconclusive ({arrangement}): {noisy}. The engine or host is too noisy for a {AGREEMENT_PCT:g}% "
            "comparison of these; run it on an otherwise idle host"
        )
    dsbench_gate.check()
