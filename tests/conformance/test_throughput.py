"""Throughput baselines of ``method = "random"`` entries in ``thresholds/<hw>.toml`` (e.g. seed 004's example).

Each entry runs its workload (random prompts, sglang's range-ratio convention, ratio 1 unless the entry says
otherwise) and is held to the floors the entry sets: ``output_tok_s_min``, ``total_tok_s_min``, ``qpm_min``.
An entry without a floor is measured and recorded (for history and the regression gate), and still fails when
requests fail.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.gate import Gate
from pytest_dsbench.load.api import (
    LoadContext,
    baseline_arrivals,
    baseline_dataset,
    baseline_params,
    record_run_health,
    record_run_metric,
    run_workload,
)
from pytest_dsbench.load.runner import LoadRun
from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.run import DsbenchRun
from pytest_dsbench.thresholds import HardwareProfile

pytestmark = pytest.mark.throughput

FLOORS = (("output_tok_s", "output_tok_s_min"), ("total_tok_s", "total_tok_s_min"), ("qpm", "qpm_min"))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "baseline" in metafunc.fixturenames:
        run = DsbenchRun.of(metafunc.config)
        metafunc.parametrize("baseline", baseline_params(run.hw, run.options.engine, "random"))


@pytest.fixture(scope="module")
def load_ctx(dsbench_engine: EngineInfo, dsbench_options: DsbenchOptions, hw_profile: HardwareProfile) -> LoadContext:
    return LoadContext(dsbench_engine, dsbench_options, hw_profile)


@pytest.fixture
def throughput_run(baseline: tuple[str, Any], load_ctx: LoadContext) -> LoadRun:
    """The entry's load run (in set-up, so a run whose client was the bottleneck is an error, never a result)."""
    name, entry = baseline
    dataset = baseline_dataset(load_ctx, name, entry)
    return run_workload(load_ctx, dataset, name=f"throughput-{name}", **baseline_arrivals(entry))


def test_random_workload_meets_its_throughput_floor(
    baseline: tuple[str, Any], throughput_run: LoadRun, hw_profile: HardwareProfile, dsbench_gate: Gate
) -> None:
    name, entry = baseline
    source = hw_profile.where(f"[throughput.{name}]")
    for metric, key in FLOORS:
        record_run_metric(dsbench_gate, throughput_run, metric, getattr(entry, key), f"{source} {key}")
    record_run_health(dsbench_gate, throughput_run, hw_profile.slo.error_rate_max, f"{source} / [slo] error_rate_max")
    dsbench_gate.check()
