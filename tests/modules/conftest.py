"""Fixtures of the per-module benchmarks: the scale, the device, its measured peaks, built modules, and the
runner that times one module with pytest-benchmark and records it into the run (history, regression gate).

Token counts come from the scale (``--dsbench-modules-scale``; ``auto`` = ``full`` with a CUDA device, ``ci``
without), so they are parametrized here; they vary fastest, so each module is built once for all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from pytest_dsbench.gate import Gate
from pytest_dsbench.modules.config import Scale, select_scale
from pytest_dsbench.modules.roofline import DevicePeaks
from pytest_dsbench.modules.suite import ModuleBench, ModuleCache, import_torch
from pytest_dsbench.run import DsbenchRun

if TYPE_CHECKING:
    import torch


def _scale(config: pytest.Config) -> tuple[Scale, str]:
    import importlib.util

    cuda = False
    if importlib.util.find_spec("torch") is not None:
        import torch

        cuda = torch.cuda.is_available()
    return select_scale(DsbenchRun.of(config).options.modules_scale, cuda)


@pytest.hookimpl(trylast=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize ``tokens`` with the scale's token counts, last, so that they vary fastest."""
    if "tokens" in metafunc.fixturenames:
        scale, _ = _scale(metafunc.config)
        metafunc.parametrize("tokens", scale.token_counts, ids=lambda t: f"tokens={t}")


def pytest_report_header(config: pytest.Config) -> list[str]:
    scale, why = _scale(config)
    return [f"dsbench modules: scale {scale.name} ({why}), token counts {list(scale.token_counts)}"]


@pytest.fixture(scope="session")
def modules_scale(pytestconfig: pytest.Config) -> Scale:
    """The scale this session runs: dimensions, token counts, rounds."""
    return _scale(pytestconfig)[0]


@pytest.fixture(scope="session")
def modules_device(modules_scale: Scale) -> Iterator[torch.device]:
    """The first CUDA device, else the CPU; torch's CPU threads as the scale says for the session."""
    torch = import_torch()
    threads = torch.get_num_threads()
    if modules_scale.cpu_threads is not None:
        torch.set_num_threads(modules_scale.cpu_threads)
    yield torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def device_peaks(modules_device: torch.device, modules_scale: Scale) -> DevicePeaks:
    """FLOP/s and bandwidth peaks, measured once per session on this device."""
    from pytest_dsbench.modules.roofline import measure_peaks

    return measure_peaks(modules_device, modules_scale.peak_gemm_n, modules_scale.peak_copy_bytes)


@pytest.fixture(scope="session")
def module_cache() -> Iterator[ModuleCache]:
    cache = ModuleCache()
    yield cache
    cache.clear()


@pytest.fixture
def modules(benchmark: Any, dsbench_gate: Gate, modules_scale: Scale, modules_device: torch.device,
            device_peaks: DevicePeaks, module_cache: ModuleCache) -> ModuleBench:
    return ModuleBench(modules_scale, modules_device, device_peaks, module_cache, benchmark, dsbench_gate)
