"""This suite's numbers against the official tool's: sglang.bench_serving on the same workload, same engine.

Both clients run the SLO workload's lengths on identical terms: the ``random-ids`` data set (sglang's offline
construction, no shared prefixes) and every request due at once, so neither arrival draws nor prefix-cache
hits differ. Three arrangements:

* ``side-by-side`` (``pytest_dsbench.load.side_by_side``): each client sends one wave of the same prompts (half
  the workload's max-concurrency, as far as both waves fit one engine step), both waves started at the same
  instant and held back by one long request so that the engine prefills them in the same step. Every request
  of either client then shares its first-token step, decode steps and last step with the other client's: the
  two measure the same events, so drift of the engine or the host cannot separate them. On a small, noisy
  host this is the arrangement that can resolve 3%. A round that was not in lock step (a wave split over two
  steps, the hold over too early, a client late: ``SideBySide.lock_step_problem``) is repeated, up to twice
  the rounds in all; short of 5 good rounds the test is skipped as inconclusive, naming each problem.
* ``sequential`` (max-concurrency 1): each request meets an idle engine, so the engine's batching adds no
  spread, and each client drives the engine alone: a client that slowed the engine itself would show here.
  (Every round sends the same prompts, so after the warm-up their prefixes may be cached: alike for both.)
* ``loaded`` (the workload's own prompt count and max-concurrency): the engine batches, and which requests share
  a first step depends on arrival order at the millisecond, so TTFT varies from round to round on a busy host.

In the last two the clients alternate (ours, sglang, ours, ...) after one unrecorded warm-up run, and each
adjacent pair is compared. In every arrangement the median relative difference of the pairs
must be within 3% for the TTFT, TPOT and ITL means and the output token throughput. A miss whose rounds
differ in both directions is noise, not a measured disagreement (``pytest_dsbench.load.agreement``): if every
miss is of that kind the test is skipped as inconclusive, naming each metric and its per-round differences; a
miss in the same direction in every round fails it. The sglang client runs in a venv of its
own, created on first use (minutes); this test is marked ``slow``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.gate import Gate
from pytest_dsbench.load.agreement import compare_rounds, inconclusive_only
from pytest_dsbench.load.api import LoadContext, run_workload, slo_workload
from pytest_dsbench.load.datasets import DatasetSpec
from pytest_dsbench.load.runner import LoadRun
from pytest_dsbench.load.sglang_bridge import ReferenceToolError, run_sglang
from pytest_dsbench.load.side_by_side import run_lock_step_rounds
from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.thresholds import HardwareProfile

pytestmark = [pytest.mark.throughput, pytest.mark.slow]

AGREEMENT_PCT = 3.0
COMPARED = ("ttft_ms_mean", "tpot_ms_mean", "itl_ms_mean", "output_tok_s")
ROUNDS = 5
SEQUENTIAL_PROMPTS = 8
"""Requests per sequential round: each meets an idle engine, so a few give a steady mean."""


@pytest.mark.parametrize("arrangement", ["side-by-side", "sequential", "loaded"])
def test_metrics_agree_with_sglang_bench_serving(
    arrangement: str,
    dsbench_engine: EngineInfo,
    dsbench_options: DsbenchOptions,
    hw_profile: HardwareProfile,
    dsbench_gate: Gate,
) -> None:
    if dsbench_options.load_generator == "sglang":
        pytest.skip("--load-generator sglang: both sides would be sglang.bench_serving")
    ctx = LoadContext(dsbench_engine, dsbench_options, hw_profile)
    entry = slo_workload(hw_profile)
    if entry is None:
        pytest.skip(f"{hw_profile.path} has no [throughput.*] workload to compare on")
    name, workload = entry
    sequential = arrangement != "loaded"
    max_concurrency = 1 if sequential else workload.max_concurrency
    dataset = DatasetSpec(
        name="random-ids",
        num_prompts=min(workload.num_prompts, SEQUENTIAL_PROMPTS) if sequential else workload.num_prompts,
        input_len=workload.input_len,
        output_len=workload.output_len,
        range_ratio=1.0,
        seed=workload.seed or 1,
    )
    label = f"reference-{name}-{arrangement}"
    ours: list[LoadRun] = []
    theirs: list[LoadRun] = []
    extra: dict[str, object] = {}

    def ours_once(run_name: str) -> LoadRun:
        return run_workload(
            ctx, dataset, name=run_name, request_rate=math.inf, max_concurrency=max_concurrency, include_usage=False,
            prefix_cache="warm",  # as sglang.bench_serving runs: the clients are compared under the same cache state
        )

    try:
        # one unrecorded run first: the engine's first batches after start-up are slower than its steady state
        ours_once(f"{label}-warmup")
        if arrangement == "side-by-side":
            max_model_len = dsbench_engine.max_model_len or hw_profile.deployment.max_model_len
            # both waves must fit one engine step (its token budget is at least max_model_len)
            wave = max(1, min((workload.max_concurrency or 2) // 2, max_model_len // (2 * dataset.input_len)))
            done = run_lock_step_rounds(
                ctx,
                replace(dataset, num_prompts=wave),
                rounds=ROUNDS,
                max_attempts=2 * ROUNDS,
                name=label,
                hold_tokens=max_model_len - 16,  # alone in its step, as long a prefill as the engine takes
            )
            if len(done.pairs) < ROUNDS:
                pytest.skip(
                    f"inconclusive (side-by-side): the engine took both waves in lock step in {len(done.pairs)} "
                    f"of {done.attempts} rounds, {ROUNDS} needed ({'; '.join(done.discarded)})"
                )
            ours = [pair.ours for pair in done.pairs]
            theirs = [pair.theirs for pair in done.pairs]
            extra = {
                "wave_requests_per_client": wave,
                "discarded_rounds": done.discarded,
                "start_gaps_s": [pair.start_gap_s for pair in done.pairs],
            }
        else:
            for round_ in range(ROUNDS):
                run = ours_once(f"{label}-dsbench-{round_}")
                ours.append(run)
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
            extra={
                **extra,
                "inconclusive": agreement.inconclusive,
                "round_diffs_pct": list(agreement.round_diffs_pct),
            },
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
