"""The roofline fraction: measured time against max(FLOPs / peak FLOP/s, bytes / peak bandwidth)."""

from __future__ import annotations

import pytest

from pytest_dsbench.modules.cost import ModuleCost
from pytest_dsbench.modules.roofline import DevicePeaks, measure_peaks, place

PEAKS = DevicePeaks("test", flop_s={"bf16": 1e15}, bandwidth_b_s={"device": 1e12, "host": 1e11, "h2d": 5e10})


def test_a_memory_bound_call_at_twice_the_roofline_time_is_at_half_the_peak() -> None:
    roof = place(ModuleCost(10**9, {"device": 10**9}), 2e-3, PEAKS)  # ideal: 1 ms of memory, 1 us of compute
    assert (roof.bound, roof.fraction) == ("memory", pytest.approx(0.5))
    assert roof.bandwidth_gb_s == pytest.approx(500.0)
    assert roof.tflop_s == pytest.approx(0.5)


def test_a_compute_bound_call_is_judged_against_the_flop_peak() -> None:
    roof = place(ModuleCost(10**12, {"device": 10**6}), 4e-3, PEAKS)  # ideal: 1 ms of compute
    assert (roof.bound, roof.fraction) == ("compute", pytest.approx(0.25))


def test_memory_paths_add_up_host_gather_then_copy() -> None:
    roof = place(ModuleCost(0, {"host": 10**8, "h2d": 5 * 10**7}), 4e-3, PEAKS)  # 1 ms + 1 ms
    assert roof.roofline_time_s == pytest.approx(2e-3)
    assert roof.fraction == pytest.approx(0.5)


def test_fp8_is_judged_against_the_fp8_peak_when_one_was_measured() -> None:
    both = DevicePeaks("test", flop_s={"bf16": 1e15, "fp8": 2e15}, bandwidth_b_s={"device": 1e12})
    work = ModuleCost(2 * 10**12, {"device": 1})
    assert place(work, 2e-3, both, "fp8").fraction == pytest.approx(0.5)
    assert place(work, 2e-3, PEAKS, "fp8").fraction == pytest.approx(1.0)  # no fp8 peak: bf16's


def test_traffic_over_an_unmeasured_path_is_refused_naming_the_measured_ones() -> None:
    cpu_only = DevicePeaks("cpu", flop_s={"bf16": 1e12}, bandwidth_b_s={"device": 1e10, "host": 1e10})
    with pytest.raises(ValueError, match="no measured bandwidth peak for h2d \\(have device, host\\)"):
        place(ModuleCost(0, {"host": 1, "h2d": 1}), 1e-3, cpu_only)


def test_a_non_positive_time_is_an_error() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        place(ModuleCost(1, {"device": 1}), 0.0, PEAKS)


def test_peaks_are_measured_on_the_cpu_for_every_path_the_cpu_modules_use() -> None:
    torch = pytest.importorskip("torch")
    peaks = measure_peaks(torch.device("cpu"), gemm_n=64, copy_bytes=1 << 20)
    assert set(peaks.flop_s) == {"bf16"} and set(peaks.bandwidth_b_s) == {"device", "host"}
    assert all(v > 0 for v in (*peaks.flop_s.values(), *peaks.bandwidth_b_s.values()))
    assert peaks.device == "cpu" and any("GEMM 64x64x64" in note for note in peaks.notes)
