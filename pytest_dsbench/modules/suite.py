"""The module benchmarks' helpers for ``tests/modules``: the cache of built modules and the object each test
gets (scale, device, peaks, FP8 kernels or the reason to skip, and :meth:`ModuleBench.run`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from pytest_dsbench.gate import Gate
from pytest_dsbench.modules import bench
from pytest_dsbench.modules.config import ModelDims, Scale
from pytest_dsbench.modules.impl import KERNELS
from pytest_dsbench.modules.roofline import DevicePeaks, Roofline

if TYPE_CHECKING:
    import torch

    from pytest_dsbench.modules.fp8 import Fp8Kernels
    from pytest_dsbench.modules.impl import Prepared

TORCH_MISSING = "the module benchmarks need torch: pip install 'pytest-dsbench[modules]' (or any torch build)"


def import_torch() -> Any:
    """torch, or a skip naming the extra that installs it."""
    return pytest.importorskip("torch", reason=TORCH_MISSING)


@dataclass
class ModuleCache:
    """Holds the one module built last (the full MoE layer alone is 22 GiB of bf16 weights)."""

    key: tuple[Any, ...] | None = None
    module: Any = None
    fp8_reason: dict[str, str | None] = field(default_factory=dict)
    """Why the FP8 variants cannot run (None: they can), found once per session."""

    def get(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        if key != self.key:
            self.clear()
            self.module, self.key = build(), key
        return self.module

    def clear(self) -> None:
        import gc

        self.module = self.key = None
        gc.collect()
        torch = import_torch()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


@dataclass
class ModuleBench:
    """What a module test needs: scale, device, peaks, built modules, and :meth:`run`."""

    scale: Scale
    device: torch.device
    peaks: DevicePeaks
    cache: ModuleCache
    benchmark: Any
    gate: Gate

    @property
    def dims(self) -> ModelDims:
        return self.scale.dims

    def build(self, *key: Any, factory: Callable[[], Any]) -> Any:
        return self.cache.get(key, factory)

    def need_cuda(self, what: str) -> None:
        if self.device.type != "cuda":
            pytest.skip(f"{what} needs a CUDA device; this run has none (the device is {self.device.type})")

    def fp8(self) -> Fp8Kernels:
        """vLLM's block-FP8 kernels, or a skip that says why they cannot run here."""
        from pytest_dsbench.modules import fp8

        if "reason" not in self.cache.fp8_reason:
            self.cache.fp8_reason["reason"] = fp8.unavailable_reason(self.device)
        reason = self.cache.fp8_reason["reason"]
        if reason is not None:
            pytest.skip(reason)
        return fp8.Fp8Kernels()

    def run(self, prepared: Prepared, module: str, variant: str, dtype: str = "bf16",
            **workload: Any) -> Roofline | None:
        full = {"module": module, "variant": variant, "dtype": dtype, "tokens": prepared.tokens,
                "scale": self.scale.name, "device": self.device.type, **workload}
        return bench.run_benchmark(self.benchmark, self.gate, prepared, scale=self.scale, device=self.device,
                                   peaks=self.peaks, workload=full, dtype=dtype)

    def run_mlp(self, module: str, variant: str, intermediate: int, dtype: str, tokens: int) -> Roofline | None:
        """A SwiGLU MLP of ``intermediate`` (a dense layer, one expert): bf16 in torch, block-FP8 in vLLM."""
        from pytest_dsbench.modules.impl import Mlp

        fp8 = self.fp8() if dtype == "fp8" else None
        mlp = self.build(module, dtype, factory=lambda: Mlp(self.dims, intermediate, self.device, fp8))
        return self.run(mlp.prepare(tokens), module, variant, dtype, kernels=KERNELS[dtype])
