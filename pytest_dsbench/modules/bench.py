"""One module timed by pytest-benchmark and recorded into the run's results (so history and regression gate).

Timing: a round calls the module ``iterations`` times back to back, chosen so that a round lasts at least the
scale's ``min_round_s``; pytest-benchmark's clock is replaced by one that first waits for the device
(``torch.cuda.synchronize``), so a round ends when its last kernel has, and pytest-benchmark's per-call
statistics (round time / iterations) are the device's. Where the fixture has no replaceable clock the target
synchronises itself and the per-call times are divided out here.

Recorded per benchmark (workload: module, variant, dtype, tokens, scale, device):

* ``module_time_ms_median`` with every round's per-call time as samples, which the regression gate tests;
* ``module_bandwidth_gb_s``, ``module_tflop_s`` and ``module_roofline_fraction``, derived from the median and the
  cost model against the session's measured peaks.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pytest_dsbench.modules.config import Scale
from pytest_dsbench.modules.impl import Prepared
from pytest_dsbench.modules.roofline import DevicePeaks, Roofline, place

if TYPE_CHECKING:
    import torch

    from pytest_dsbench.gate import Gate

MAX_ITERATIONS = 10_000
TIME_METRIC = "module_time_ms_median"
DERIVED_METRICS = ("module_bandwidth_gb_s", "module_tflop_s", "module_roofline_fraction")
PEAK_METRICS = ("device_peak_tflop_s", "device_peak_gb_s")


def device_clock(device: torch.device) -> Callable[[], float]:
    """``time.perf_counter`` after the device has finished its queued work (plain on a CPU)."""
    if device.type != "cuda":
        return time.perf_counter
    import torch

    def synced_perf_counter() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return synced_perf_counter


def iterations_for(run: Callable[[], Any], clock: Callable[[], float], min_round_s: float) -> int:
    """Calls per round so a round lasts at least ``min_round_s`` (after one untimed call: compilation, caches)."""
    run()
    start = clock()
    run()
    once = max(clock() - start, 1e-9)
    return max(1, min(MAX_ITERATIONS, math.ceil(min_round_s / once)))


def time_calls(benchmark: Any, prepared: Prepared, scale: Scale, device: torch.device) -> list[float]:
    """Per-call seconds of every timed round, through pytest-benchmark; empty when benchmarks are disabled."""
    clock = device_clock(device)
    iterations = iterations_for(prepared.run, clock, scale.min_round_s)
    if hasattr(benchmark, "_timer"):
        benchmark._timer = clock
        benchmark.pedantic(prepared.run, rounds=scale.rounds, warmup_rounds=scale.warmup_rounds,
                           iterations=iterations)
        divide = 1
    else:  # no replaceable clock: the target waits for the device itself
        def rounds() -> None:
            for _ in range(iterations):
                prepared.run()
            clock()

        benchmark.pedantic(rounds, rounds=scale.rounds, warmup_rounds=scale.warmup_rounds)
        divide = iterations
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: called once, nothing measured
        return []
    benchmark.extra_info["iterations_per_round"] = iterations
    return [float(t) / divide for t in stats.stats.data]


def record(gate: Gate, workload: dict[str, Any], times_s: list[float], prepared: Prepared, peaks: DevicePeaks,
           dtype: str) -> Roofline:
    """Record the median time (rounds as samples) and the roofline figures of one benchmark."""
    median_s = statistics.median(times_s)
    roof = place(prepared.cost, median_s, peaks, dtype)
    n = len(times_s)
    gate.record(TIME_METRIC, median_s * 1e3, samples=[t * 1e3 for t in times_s], workload=workload)
    for metric, value in zip(DERIVED_METRICS, (roof.bandwidth_gb_s, roof.tflop_s, roof.fraction), strict=True):
        gate.record(metric, value, sample_count=n, workload=workload)
    return roof


def run_benchmark(benchmark: Any, gate: Gate, prepared: Prepared, *, scale: Scale, device: torch.device,
                  peaks: DevicePeaks, workload: dict[str, Any], dtype: str = "bf16") -> Roofline | None:
    """Time ``prepared``, record it, put the figures into pytest-benchmark's ``extra_info`` and apply the gate
    (a regression against the stored baseline fails the test)."""
    times_s = time_calls(benchmark, prepared, scale, device)
    if not times_s:
        return None
    roof = record(gate, workload, times_s, prepared, peaks, dtype)
    benchmark.extra_info.update({
        "workload": workload, "flops": prepared.cost.flops, "bytes": prepared.cost.bytes, **prepared.facts,
        "bandwidth_gb_s": roof.bandwidth_gb_s, "tflop_s": roof.tflop_s, "roofline_fraction": roof.fraction,
        "bound": roof.bound,
    })
    gate.check()
    return roof


def record_peaks(gate: Gate, peaks: DevicePeaks, workload: dict[str, Any]) -> None:
    """The session's measured peaks as results, so tables, reports and history show what fractions refer to (with
    the method, where several were tried: the h2d peak is the best of pinned and pageable copies)."""
    for dtype, flop_s in peaks.flop_s.items():
        gate.record("device_peak_tflop_s", flop_s / 1e12, workload={**workload, "dtype": dtype})
    for memory, b_s in peaks.bandwidth_b_s.items():
        method = {"method": peaks.methods[memory]} if memory in peaks.methods else {}
        gate.record("device_peak_gb_s", b_s / 1e9, workload={**workload, "memory": memory, **method})
