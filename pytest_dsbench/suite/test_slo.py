"""Latency SLOs under load: the limits of ``thresholds/<hw>.toml`` ``[slo]``, measured with one shared run.

The engine is loaded with the profile's SLO workload (``[slo] workload``, else ``[throughput.tencent]``, else
the first one-run workload: random, deeplink or tencent): prompts at the workload's lengths, request rate and
max-concurrency. Each limit the profile sets (``[slo] {metric}_max`` / ``{metric}_min``) is one test, recorded
through the metric's declaration like every other load metric; a failure names the statistic, the measured
value, the limit and the sample count, and every figure carries its 95% interval. A run whose client was the
bottleneck, that is shorter or has fewer requests than ``[evidence]`` asks (a pNN limit needs enough requests
above its percentile), or a cold-cache workload whose prompts hit the engine's prefix cache, errors the tests here
as INVALID with the fix named; it never passes.

The engine's own /metrics is sampled through the run; its figures (preemptions, queue and KV-cache peaks,
prefix-cache hits, speculative-decoding acceptance) are recorded in one test, each against its ``[slo]`` limit
when the profile sets one (``preemptions_max = 0``); a deployment with ``mtp = true`` must show speculative
decoding there (its acceptance rate and mean acceptance length are then gated like TPOT). An engine without
/metrics skips that test with a note.
"""

from __future__ import annotations

import pytest

from pytest_dsbench import metrics
from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.gate import Gate
from pytest_dsbench.load.api import (
    LoadContext,
    record_run_metric,
    record_server_metrics,
    require_evidence,
    run_workload,
    slo_workload,
    workload_arrivals,
    workload_dataset,
)
from pytest_dsbench.load.runner import LoadRun
from pytest_dsbench.metrics import Limit
from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.thresholds import HardwareProfile

pytestmark = pytest.mark.slo

LIMITED = ["tpot_ms_mean", "tpot_ms_p99", "ttft_ms_median", "ttft_ms_p99", "itl_ms_p99", "error_rate"]
"""The metrics ``[slo]`` limits, one test each (the limit key is the metric's ``{metric}_max``)."""

SERVER_LIMITED = ["preemptions", "requests_waiting_peak", "kv_cache_usage_peak", "spec_decode_acceptance_rate",
                  "spec_decode_acceptance_length"]
"""Server metrics ``[slo]`` can limit (recorded together in one test, each against its limit when set)."""


@pytest.fixture(scope="module")
def load_ctx(dsbench_engine: EngineInfo, dsbench_options: DsbenchOptions, hw_profile: HardwareProfile) -> LoadContext:
    return LoadContext(dsbench_engine, dsbench_options, hw_profile)


@pytest.fixture(scope="module")
def slo_run(load_ctx: LoadContext) -> LoadRun:
    """One load run shared by every SLO test (raises InvalidRun when the client was the bottleneck)."""
    entry = slo_workload(load_ctx.hw)
    if entry is None:
        pytest.skip(f"{load_ctx.hw.path} has no [throughput.*] workload to load the engine for the SLOs")
    name, workload = entry
    run = run_workload(
        load_ctx, workload_dataset(load_ctx, name, workload), name=f"slo-{name}", **workload_arrivals(workload)
    )
    require_evidence(load_ctx, run, _where(load_ctx.hw))
    return run


def _where(profile: HardwareProfile) -> str:
    """The entry the SLO tests load the engine with, for INVALID messages."""
    entry = slo_workload(profile)
    return profile.where(f"[throughput.{entry[0] if entry else '?'}]")


def _limit(profile: HardwareProfile, metric: str) -> Limit:
    """The ``[slo]`` limit on ``metric``; skips the test when the profile sets none."""
    limit = profile.slo_limit(metric)
    if limit.value is None:
        pytest.skip(f"{profile.path} sets no [slo] {metrics.get(metric).limit_key}")
    return limit


@pytest.mark.parametrize("metric", LIMITED)
def test_latency_meets_the_profile_slo(
    metric: str, slo_run: LoadRun, load_ctx: LoadContext, hw_profile: HardwareProfile, dsbench_gate: Gate
) -> None:
    limit = _limit(hw_profile, metric)
    require_evidence(load_ctx, slo_run, _where(hw_profile), [metric])  # a p99 of 8 requests is their maximum
    record_run_metric(dsbench_gate, slo_run, metric, limit)
    dsbench_gate.check()


def test_goodput_meets_the_profile_slo(slo_run: LoadRun, hw_profile: HardwareProfile, dsbench_gate: Gate) -> None:
    floor = _limit(hw_profile, "goodput_fraction")
    if "goodput_fraction" not in slo_run.summary.values:
        pytest.fail(
            f"{hw_profile.path} sets goodput_fraction_min but no per-request goodput limit "
            "(goodput_ttft_ms_max, goodput_tpot_ms_max or goodput_e2e_ms_max)",
            pytrace=False,
        )
    record_run_metric(dsbench_gate, slo_run, "goodput_fraction", floor)
    dsbench_gate.check()


def test_server_usage_matches_requested_length_under_ignore_eos(slo_run: LoadRun, dsbench_gate: Gate) -> None:
    """With ignore_eos the server must generate exactly max_tokens; otherwise TPOT and throughput are wrong."""
    record_run_metric(
        dsbench_gate,
        slo_run,
        "output_len_mismatch_fraction",
        Limit(0.0, "ignore_eos: usage.completion_tokens == max_tokens"),
    )
    bad = [
        r
        for r in slo_run.records
        if r.success and r.usage_completion_tokens is not None and r.usage_completion_tokens != r.max_tokens
    ]
    if bad:
        dsbench_gate.fail(
            f"e.g. request {bad[0].index}: expected {bad[0].max_tokens} completion tokens, "
            f"got {bad[0].usage_completion_tokens}"
        )
    dsbench_gate.check()


def test_server_metrics_meet_the_profile_slo(slo_run: LoadRun, hw_profile: HardwareProfile, dsbench_gate: Gate) -> None:
    """The engine's /metrics during the SLO run, recorded (history, report) and held to the ``[slo]`` limits."""
    report = slo_run.server_metrics
    if report is None or not report.available:
        pytest.skip(f"no server metrics: {report.note if report else 'not sampled'}")
    recorded = record_server_metrics(dsbench_gate, slo_run, hw_profile.slo_limit)
    unread = [m for m in SERVER_LIMITED if m not in recorded and hw_profile.slo_limit(m).value is not None]
    if hw_profile.deployment.mtp and "spec_decode_acceptance_rate" not in recorded:
        dsbench_gate.fail(
            f"{hw_profile.path} deployment {hw_profile.deployment_name!r} has mtp = true, but the engine's /metrics "
            "shows no speculative decoding (expected its spec-decode counters; is the engine serving without MTP?)"
        )
    dsbench_gate.check()
    if unread:
        pytest.skip(f"the engine's /metrics gives no {', '.join(unread)} (set in {hw_profile.path} [slo]); "
                    f"recorded: {', '.join(recorded) or 'none'}")
