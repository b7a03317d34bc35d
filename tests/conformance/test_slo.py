"""Latency SLOs under load: the limits of ``thresholds/<hw>.toml`` ``[slo]``, measured with one shared run.

The engine is loaded with the profile's SLO workload (``[slo] workload``, else ``[throughput.tencent]``, else
the first throughput entry): random prompts at the entry's lengths, request rate and max-concurrency. Each
limit the profile sets is one test; a failure names the statistic, the measured value, the limit and the
sample count. A run whose client was the bottleneck errors every test here (INVALID), it never passes.
"""

from __future__ import annotations

import pytest

from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.gate import Gate
from pytest_dsbench.load.api import LoadContext, baseline_arrivals, baseline_dataset, run_workload, slo_workload
from pytest_dsbench.load.runner import LoadRun
from pytest_dsbench.metrics import metric_samples
from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.thresholds import HardwareProfile

pytestmark = pytest.mark.slo

LIMITS = [
    ("tpot_ms_mean", "tpot_ms_mean_max"),
    ("tpot_ms_p99", "tpot_ms_p99_max"),
    ("ttft_ms_p99", "ttft_ms_p99_max"),
    ("itl_ms_p99", "itl_ms_p99_max"),
    ("error_rate", "error_rate_max"),
]


@pytest.fixture(scope="module")
def load_ctx(dsbench_engine: EngineInfo, dsbench_options: DsbenchOptions, hw_profile: HardwareProfile) -> LoadContext:
    return LoadContext(dsbench_engine, dsbench_options, hw_profile)


@pytest.fixture(scope="module")
def slo_run(load_ctx: LoadContext) -> LoadRun:
    """One load run shared by every SLO test (raises InvalidRun when the client was the bottleneck)."""
    entry = slo_workload(load_ctx.hw)
    if entry is None:
        pytest.skip(f"{load_ctx.hw.path} has no [throughput.*] workload to load the engine for the SLOs")
    name, baseline = entry
    return run_workload(
        load_ctx, baseline_dataset(load_ctx, name, baseline), name=f"slo-{name}", **baseline_arrivals(baseline)
    )


def _source(profile: HardwareProfile, key: str) -> str:
    return profile.where(f"[slo] {key}")


@pytest.mark.parametrize(("metric", "key"), LIMITS, ids=[m for m, _ in LIMITS])
def test_latency_meets_the_profile_slo(
    metric: str, key: str, slo_run: LoadRun, hw_profile: HardwareProfile, dsbench_gate: Gate
) -> None:
    limit = getattr(hw_profile.slo, key)
    if limit is None:
        pytest.skip(f"{hw_profile.path} sets no [slo] {key}")
    samples = metric_samples(slo_run.summary, metric)
    dsbench_gate.record(
        metric,
        slo_run.summary[metric],
        samples=samples,
        sample_count=len(samples) or len(slo_run.records),
        limit=limit,
        limit_source=_source(hw_profile, key),
        workload=slo_run.workload,
    )
    dsbench_gate.check()


def test_goodput_meets_the_profile_slo(slo_run: LoadRun, hw_profile: HardwareProfile, dsbench_gate: Gate) -> None:
    floor = hw_profile.slo.goodput_fraction_min
    if floor is None:
        pytest.skip(f"{hw_profile.path} sets no [slo] goodput_fraction_min")
    if "goodput_fraction" not in slo_run.summary.values:
        pytest.fail(
            f"{hw_profile.path} sets goodput_fraction_min but no per-request goodput limit "
            "(goodput_ttft_ms_max, goodput_tpot_ms_max or goodput_e2e_ms_max)",
            pytrace=False,
        )
    dsbench_gate.record(
        "goodput_fraction",
        slo_run.summary["goodput_fraction"],
        sample_count=len(slo_run.records),
        limit=floor,
        limit_source=_source(hw_profile, "goodput_fraction_min"),
        workload=slo_run.workload,
    )
    dsbench_gate.check()


def test_server_usage_matches_requested_length_under_ignore_eos(slo_run: LoadRun, dsbench_gate: Gate) -> None:
    """With ignore_eos the server must generate exactly max_tokens; otherwise TPOT and throughput are wrong."""
    dsbench_gate.record(
        "output_len_mismatch_fraction",
        slo_run.summary["output_len_mismatch_fraction"],
        sample_count=slo_run.summary.completed,
        limit=0.0,
        limit_source="ignore_eos: usage.completion_tokens == max_tokens",
        workload=slo_run.workload,
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
