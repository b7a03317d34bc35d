"""Every ``[throughput.NAME]`` workload of ``thresholds/<hw>.toml``, run by its evaluation method and judged by it.

One test per workload (test id = the entry's name), whatever its ``method``:

* ``random``: the workload as written, against the floors it sets (``output_tok_s_min``, ``total_tok_s_min``,
  ``qpm_min``).
* ``deeplink`` (seed 000): output token throughput of the random workload against ``output_tok_s_min``.
* ``tencent`` (seed 003): the fixed 128/128/128 run (mean TPOT within the SLO, ``total_tok_s_min``, ``qpm_min``)
  and the search for the largest concurrency that keeps mean TPOT within the SLO.
* ``ali_decode`` (seed 003): mean TPOT per batch size and the server-logged decode throughput per running batch
  size (needs the engine log: the suite's own in start mode, ``--engine-log`` in attach mode).
* ``ali_prefill`` (seed 003): input token throughput per accelerator at each input length against
  ``input_tok_s_per_device_min``.

Every load run's error rate is held to ``[slo] error_rate_max``. Results are also written in the seeds' own
formats under ``<artifacts>/load/methods/``. The load runs happen in a fixture, so a run whose client was the
bottleneck (INVALID) errors the test, as in the SLO tests, and is never judged.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.gate import Gate
from pytest_dsbench.load.api import LoadContext, workload_params
from pytest_dsbench.methods import METHODS, Judge, MethodUnavailable, WorkloadEntry
from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.run import DsbenchRun
from pytest_dsbench.thresholds import HardwareProfile

pytestmark = pytest.mark.throughput


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "workload" in metafunc.fixturenames:
        run = DsbenchRun.of(metafunc.config)
        metafunc.parametrize("workload", workload_params(run.hw, run.options.engine))


@pytest.fixture(scope="module")
def load_ctx(dsbench_engine: EngineInfo, dsbench_options: DsbenchOptions, hw_profile: HardwareProfile) -> LoadContext:
    return LoadContext(dsbench_engine, dsbench_options, hw_profile)


@pytest.fixture
def method_result(workload: tuple[str, WorkloadEntry], load_ctx: LoadContext) -> Any:
    """The workload's load runs by its method (in set-up: a run whose client was the bottleneck is an error)."""
    name, entry = workload
    try:
        return METHODS[entry.method].run(load_ctx, name, entry)
    except MethodUnavailable as exc:
        pytest.skip(str(exc))


def test_workload_meets_its_limits(
    workload: tuple[str, WorkloadEntry], method_result: Any, hw_profile: HardwareProfile, dsbench_gate: Gate
) -> None:
    name, entry = workload
    METHODS[entry.method].judge(method_result, Judge(dsbench_gate, hw_profile, name, entry))
    dsbench_gate.check()
