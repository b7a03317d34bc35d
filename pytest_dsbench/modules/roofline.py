"""The device's peaks, measured (never assumed), and where a measured module sits under them.

Peaks are measured once per session (:func:`measure_peaks`): FLOP/s by a large square matrix product per dtype
(bf16 always; FP8 through ``torch._scaled_mm`` where the GPU has FP8 tensor cores), bandwidth by large copies --
on the device (bytes read + written), in host memory, and host to device. Each is the best of a few timed
repetitions after a warm-up, the usual way to approach a peak. A peak must be a ceiling, since fractions of it are
read as efficiencies:

* ``h2d`` is the best of a pinned copy, a pageable copy of the same size and a small pageable one (a 1 GiB
  pageable copy ran at 7.8 GB/s on an H100 host while the 15 MB pageable copies of embed_tokens ran faster); which
  one won is in :attr:`DevicePeaks.methods` and the notes, and recorded with the peak.
* ``host`` is the best of two bf16 copies on torch's intra-op threads (the ones a CPU gather runs on), counted
  read + write as the traffic model counts a gather: into an equally large buffer, and piece by piece into a
  small buffer that stays in cache. A single large copy was no ceiling: its writes go to memory (read for
  ownership first), while a gather of rows from memory writes a few MB that stay in cache, and embed_tokens
  measured up to 1.8x its figure on an H100 host even with no row reused. It is not the machine's DRAM bandwidth
  (more threads or non-temporal stores may go faster); a point above it says the traffic model or the peak is
  wrong for that point, and the tables flag it. embed_tokens never reuses rows
  (:func:`~pytest_dsbench.modules.impl.id_batches`), so its rows do come from memory.
* On a CPU the modules' ``device`` memory is the host's: both peaks are the same measurement.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_dsbench.modules.cost import ModuleCost

if TYPE_CHECKING:
    import torch

PEAK_REPEATS = 5
H2D_SMALL_FRACTION = 64
"""The small pageable host-to-device copy is this fraction of the peak copy (16 MiB of 1 GiB)."""
HOST_SMALL_FRACTION = 256
"""The cache-resident buffer of the second host copy is this fraction of the peak copy (4 MiB of 1 GiB)."""


@dataclass(frozen=True)
class DevicePeaks:
    """Measured peaks: FLOP/s per dtype, bandwidth (bytes/s) per memory path, and what measured them."""

    device: str
    flop_s: dict[str, float] = field(default_factory=dict)
    bandwidth_b_s: dict[str, float] = field(default_factory=dict)
    methods: dict[str, str] = field(default_factory=dict)
    """How a bandwidth peak was measured, where several methods were tried (``h2d``: the best copy)."""
    notes: tuple[str, ...] = ()

    def compute_peak(self, dtype: str) -> tuple[float, str]:
        """The FLOP/s peak a module of ``dtype`` is judged against, and its dtype (bf16 where no FP8 peak)."""
        if dtype in self.flop_s:
            return self.flop_s[dtype], dtype
        return self.flop_s["bf16"], "bf16"


@dataclass(frozen=True)
class Roofline:
    """A measured call against the peaks."""

    time_s: float
    bandwidth_gb_s: float
    tflop_s: float
    roofline_time_s: float
    fraction: float
    bound: str


def place(cost: ModuleCost, time_s: float, peaks: DevicePeaks, dtype: str = "bf16") -> Roofline:
    """Achieved bandwidth and FLOP/s of one call that took ``time_s``, and its fraction of the roofline."""
    if time_s <= 0:
        raise ValueError(f"a measured time must be positive, got {time_s!r} s")
    missing = [path for path in cost.traffic if path not in peaks.bandwidth_b_s]
    if missing:
        raise ValueError(f"no measured bandwidth peak for {', '.join(missing)} (have "
                         f"{', '.join(peaks.bandwidth_b_s) or 'none'})")
    flop_peak, _ = peaks.compute_peak(dtype)
    memory_s = sum(b / peaks.bandwidth_b_s[path] for path, b in cost.traffic.items())
    compute_s = cost.flops / flop_peak
    ideal_s = max(memory_s, compute_s)
    return Roofline(
        time_s=time_s,
        bandwidth_gb_s=cost.bytes / time_s / 1e9,
        tflop_s=cost.flops / time_s / 1e12,
        roofline_time_s=ideal_s,
        fraction=ideal_s / time_s,
        bound="compute" if compute_s > memory_s else "memory",
    )


def _best_s(fn: Callable[[], Any], sync: Callable[[], None], repeats: int = PEAK_REPEATS) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:g} MiB"


def _fp8_gemm_flop_s(torch: Any, n: int, device: torch.device, sync: Callable[[], None]) -> float:
    a = torch.randn(n, n, device=device).to(torch.float8_e4m3fn)
    b = torch.randn(n, n, device=device).to(torch.float8_e4m3fn)
    one = torch.ones((), device=device, dtype=torch.float32)
    seconds = _best_s(lambda: torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16), sync)
    return 2 * n**3 / seconds


def measure_peaks(device: torch.device, gemm_n: int, copy_bytes: int) -> DevicePeaks:
    """Measure FLOP/s (bf16, and FP8 on a GPU with FP8 tensor cores) and the copy bandwidths of ``device``."""
    import torch

    cuda = device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    notes: list[str] = []
    a = torch.randn(gemm_n, gemm_n, device=device, dtype=torch.bfloat16)
    b = torch.randn(gemm_n, gemm_n, device=device, dtype=torch.bfloat16)
    flop_s = {"bf16": 2 * gemm_n**3 / _best_s(lambda: a @ b, sync)}
    notes.append(f"bf16 GEMM {gemm_n}x{gemm_n}x{gemm_n}")
    if cuda and torch.cuda.get_device_capability(device) >= (8, 9):
        try:
            flop_s["fp8"] = _fp8_gemm_flop_s(torch, gemm_n, device, sync)
            notes.append(f"fp8 (e4m3) GEMM {gemm_n}^3 through torch._scaled_mm")
        except (RuntimeError, AttributeError, TypeError) as exc:
            notes.append(f"no FP8 GEMM peak ({type(exc).__name__}: {exc}); FP8 modules are judged against bf16")

    elements = copy_bytes // 2
    src = torch.empty(elements, device=device, dtype=torch.bfloat16).fill_(1)
    dst = torch.empty_like(src)
    bandwidth: dict[str, float] = {}
    methods: dict[str, str] = {}

    def best_of(memory: str, candidates: dict[str, float], what: str) -> None:
        """The best candidate is the ``memory`` peak; all of them go into the notes."""
        methods[memory] = max(candidates, key=lambda method: candidates[method])
        bandwidth[memory] = candidates[methods[memory]]
        notes.append(f"{what}: " + ", ".join(f"{m} {b_s / 1e9:.3g} GB/s" for m, b_s in candidates.items())
                     + f"; the peak is the best, {methods[memory]}")

    if cuda:
        bandwidth["device"] = 2 * copy_bytes / _best_s(lambda: dst.copy_(src), sync)
        notes.append(f"device copy of {_mib(copy_bytes)} (read + write)")
        host_src = torch.ones(elements, dtype=torch.bfloat16)
        best_of("host", _host_b_s(host_src, torch.empty_like(host_src)),
                f"host copies (read + write, torch's {torch.get_num_threads()} intra-op threads)")
        h2d, why_not_pinned = _h2d_b_s(host_src, dst, sync)
        notes += [why_not_pinned] if why_not_pinned else []
        best_of("h2d", h2d, "host-to-device copies")
    else:  # the CPU's memory is both the modules' device and the host
        best_of("device", _host_b_s(src, dst), f"copies (read + write, torch's {torch.get_num_threads()} threads)")
        bandwidth["host"], methods["host"] = bandwidth["device"], methods["device"]
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    return DevicePeaks(device=name, flop_s=flop_s, bandwidth_b_s=bandwidth, methods=methods, notes=tuple(notes))


def _host_b_s(src: torch.Tensor, dst: torch.Tensor) -> dict[str, float]:
    """Host bandwidth (bytes read + written) by copy pattern: ``src`` into an equally large ``dst``, and ``src``
    piece by piece into one small buffer that stays in cache. The second is the pattern of a CPU gather whose
    output is small (embed_tokens: rows from memory into a few MB) and of a module whose weights stream in; it
    runs faster than the first (whose writes go to memory, and are read for ownership first), and a gather
    measured 1.8x the first's figure on an H100 host."""
    n_bytes = src.numel() * src.element_size()
    small = max(src.numel() // HOST_SMALL_FRACTION, 1)
    buffer, pieces = dst[:small], src.split(small)  # type: ignore[no-untyped-call]

    def into_small_buffer() -> None:
        for piece in pieces:
            buffer[: piece.numel()].copy_(piece)

    return {
        f"copy of {_mib(n_bytes)}": 2 * n_bytes / _best_s(lambda: dst.copy_(src), lambda: None),
        f"copy of {_mib(n_bytes)} through a {_mib(small * src.element_size())} buffer":
            2 * n_bytes / _best_s(into_small_buffer, lambda: None),
    }


def _h2d_b_s(host_src: torch.Tensor, dst: torch.Tensor,
             sync: Callable[[], None]) -> tuple[dict[str, float], str | None]:
    """Host-to-device bandwidth by copy method -- pinned (page-locked: the DMA engines read it directly), pageable
    of the whole buffer and pageable of a small slice (the driver stages pageable memory through pinned buffers of
    its own, and a small copy was seen to outrun a large one) -- and why pinned was not measured, if it was not."""
    copy_bytes = host_src.numel() * host_src.element_size()
    small = max(host_src.numel() // H2D_SMALL_FRACTION, 1)
    small_src, small_dst, small_bytes = host_src[:small], dst[:small], small * host_src.element_size()
    out = {
        f"pageable {_mib(copy_bytes)}": copy_bytes / _best_s(lambda: dst.copy_(host_src), sync),
        f"pageable {_mib(small_bytes)}": small_bytes / _best_s(lambda: small_dst.copy_(small_src), sync),
    }
    try:
        pinned = host_src.pin_memory()
    except RuntimeError as exc:  # no page-locked memory to be had: the pageable copies are all there is
        return out, f"no pinned host-to-device copy ({exc})"
    out[f"pinned {_mib(copy_bytes)}"] = copy_bytes / _best_s(lambda: dst.copy_(pinned, non_blocking=True), sync)
    return out, None
