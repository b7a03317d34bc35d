"""Seed 002's per-module microbenchmarks of DeepSeek-R1 (marker ``modules``), at its real dimensions on a GPU
and scaled down on a CPU (``--dsbench-modules-scale``).

Every benchmark records its median time (rounds as samples), achieved GB/s and TFLOP/s and its fraction of the
measured roofline into the run's results: they are stored in the history and, with ``--dsbench-compare``,
judged by the regression gate (``--dsbench-regress module_time_ms_median:PCT`` or the profile's
``[regress_pct]``). Speed is never asserted here; the tables are printed at the end and in the HTML report.

    pytest tests/modules -m modules --hw h100 --dsbench-modules-scale full
"""

from __future__ import annotations

import pytest

from pytest_dsbench.gate import Gate
from pytest_dsbench.modules import bench
from pytest_dsbench.modules.impl import KERNELS, ROUTINGS, EmbedTokens, LmHead, Mla, Moe
from pytest_dsbench.modules.roofline import DevicePeaks
from pytest_dsbench.modules.suite import ModuleBench
from pytest_dsbench.modules.table import EMBED_VARIANTS

pytestmark = pytest.mark.modules
DTYPES = tuple(KERNELS)


def test_device_peak(dsbench_gate: Gate, device_peaks: DevicePeaks, modules: ModuleBench) -> None:
    """The peaks every fraction refers to, measured on this device, recorded beside the modules."""
    bench.record_peaks(dsbench_gate, device_peaks, {"scale": modules.scale.name, "device": modules.device.type,
                                                    "device_name": device_peaks.device})
    modules.benchmark.extra_info["peak_notes"] = list(device_peaks.notes)
    modules.benchmark.pedantic(lambda: None, rounds=1)


@pytest.mark.parametrize("variant", EMBED_VARIANTS)
def test_embed_tokens(modules: ModuleBench, variant: str, tokens: int) -> None:
    """Seed 002's three placements: on the CPU, on the CPU then copied to the GPU, on the GPU."""
    import torch

    cpu = torch.device("cpu")
    if variant != "test_cpu":
        modules.need_cuda(f"embed_tokens {variant}")
    on_cpu = variant != "test_gpu"
    embed = modules.build("embed_tokens", on_cpu, factory=lambda: EmbedTokens(
        modules.dims, cpu if on_cpu else modules.device, modules.device))
    prepared = embed.prepare(tokens, copy_to=modules.device if variant == "test_cpu_h2d" else None)
    modules.run(prepared, "embed_tokens", variant)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_mlp(modules: ModuleBench, dtype: str, tokens: int) -> None:
    """The dense MLP of the first three layers (intermediate 18,432)."""
    modules.run_mlp("mlp", "dense", modules.dims.intermediate_size, dtype, tokens)


@pytest.mark.parametrize("dtype", DTYPES)
def test_routed_expert(modules: ModuleBench, dtype: str, tokens: int) -> None:
    """One routed expert (7168 x 2048 x 3 weights) given every token: memory-bound at small token counts."""
    modules.run_mlp("expert", "one", modules.dims.moe_intermediate_size, dtype, tokens)


@pytest.mark.parametrize("routing", ROUTINGS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_moe_layer(modules: ModuleBench, dtype: str, routing: str, tokens: int) -> None:
    """The MoE layer: noaux_tc gate, then its choice as is or replaced by an EPLB transform (seed 000). One layer
    per dtype serves every routing (its weights are 22 GiB in bf16)."""
    fp8 = modules.fp8() if dtype == "fp8" else None
    moe = modules.build("moe", dtype, factory=lambda: Moe(modules.dims, modules.device, routing,
                                                          modules.scale.ep_ranks, fp8))
    moe.routing = routing
    prepared = moe.prepare(tokens)
    modules.run(prepared, "moe", routing, dtype, kernels=KERNELS[dtype], ep_ranks=modules.scale.ep_ranks)
    modules.benchmark.extra_info["active_experts"] = prepared.facts["active_experts"]


def test_mla_prefill(modules: ModuleBench, tokens: int) -> None:
    """MLA over one causal sequence of ``tokens`` (no cache)."""
    mla = modules.build("mla", factory=lambda: Mla(modules.dims, modules.device))
    modules.run(mla.prepare_prefill(tokens), "mla_prefill", "causal")


def test_mla_decode(modules: ModuleBench, tokens: int) -> None:
    """One decode step of ``tokens`` sequences, absorbed weights, over a KV cache of the scale's context."""
    mla = modules.build("mla", factory=lambda: Mla(modules.dims, modules.device))
    context = modules.scale.decode_context
    modules.run(mla.prepare_decode(tokens, context), "mla_decode", f"absorbed-ctx{context}", context=context)


def test_lm_head(modules: ModuleBench, tokens: int) -> None:
    """The output projection to 129,280 logits."""
    head = modules.build("lm_head", factory=lambda: LmHead(modules.dims, modules.device))
    modules.run(head.prepare(tokens), "lm_head", "bf16-logits")
