"""Block-FP8 (128x128) variants through the engine's own kernels: vLLM's w8a8 block-FP8 matmul and fused MoE.

DeepSeek-R1 ships FP8 weights quantised in 128x128 blocks with a float32 scale each; activations are quantised
per token in groups of 128 on the fly. Timing that in plain torch would measure a slow emulation, so the FP8
variants run only where the kernels an engine uses exist: vLLM importable, a CUDA device with FP8 tensor cores
(compute capability 8.9 or newer). :func:`unavailable_reason` says why not otherwise; the tests skip with it.

API notes (vLLM 0.11 and later, incl. 0.20 and 0.32): ``fp8_utils.per_token_group_quant_fp8`` +
``w8a8_triton_block_scaled_mm`` (older name ``w8a8_block_fp8_matmul``); ``fused_moe.fused_experts`` with
``quant_config=fused_moe.config.fp8_w8a8_moe_quant_config(..., block_shape=[128, 128])`` (older releases took
``use_fp8_w8a8``/``w1_scale``/``w2_scale``/``block_shape`` keywords instead).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_dsbench.modules.config import FP8_BLOCK

if TYPE_CHECKING:
    import torch

FP8_MAX = 448.0
"""Largest finite float8_e4m3fn value."""
MIN_CAPABILITY = (8, 9)


def block_quantize(weight: torch.Tensor, block: int = FP8_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """``weight`` [..., N, K] -> (float8_e4m3fn [..., N, K], float32 scales [..., ceil(N/block), ceil(K/block)]),
    one scale per block = the block's max |w| / 448 (DeepSeek-V3's checkpoint format)."""
    import torch
    import torch.nn.functional as F

    *lead, n, k = weight.shape
    nb, kb = math.ceil(n / block), math.ceil(k / block)
    padded = F.pad(weight.float(), (0, kb * block - k, 0, nb * block - n))
    blocks = padded.reshape(*lead, nb, block, kb, block)
    scale = blocks.abs().amax(dim=(-3, -1)).clamp(min=1e-12) / FP8_MAX
    quant = (blocks / scale.unsqueeze(-1).unsqueeze(-3)).clamp(-FP8_MAX, FP8_MAX)
    quant = quant.reshape(*lead, nb * block, kb * block)[..., :n, :k].to(torch.float8_e4m3fn).contiguous()
    return quant, scale.contiguous()


def unavailable_reason(device: torch.device) -> str | None:
    """Why the block-FP8 variants cannot run here, or None when vLLM's kernels can run on ``device``."""
    if device.type != "cuda":
        return (f"block-FP8 kernels need CUDA (vLLM's Triton w8a8 block-FP8 matmul and fused MoE); this run's "
                f"device is {device.type}")
    import torch

    capability = torch.cuda.get_device_capability(device)
    if capability < MIN_CAPABILITY:
        return (f"block-FP8 needs FP8 tensor cores (compute capability >= 8.9); {torch.cuda.get_device_name(device)} "
                f"has {capability[0]}.{capability[1]}")
    try:
        _resolve()
    except Exception as exc:  # ImportError, or a vLLM whose API moved: the reason names it
        return (f"vLLM's block-FP8 kernels are not importable ({type(exc).__name__}: {exc}); install vllm on the GPU "
                "host for the FP8 variants")
    try:
        Fp8Kernels().probe(device)
    except Exception as exc:  # the kernels exist but do not run here (arguments moved, a missing context)
        return f"vLLM's block-FP8 kernels failed on a small probe ({type(exc).__name__}: {exc})"
    return None


@dataclass(frozen=True)
class _Api:
    quant: Callable[..., Any]
    matmul: Callable[..., Any]
    fused_experts: Callable[..., Any]
    moe_quant_config: Callable[..., Any] | None
    version: str


def _resolve() -> _Api:
    import vllm
    from vllm.model_executor.layers.fused_moe import fused_experts
    from vllm.model_executor.layers.quantization.utils import fp8_utils

    names = ("w8a8_triton_block_scaled_mm", "w8a8_block_fp8_matmul")  # newer, older name
    matmul = next((getattr(fp8_utils, n) for n in names if hasattr(fp8_utils, n)), None)
    if matmul is None:
        raise ImportError(f"vLLM's fp8_utils has neither {' nor '.join(names)}")
    moe_config: Callable[..., Any] | None
    try:
        from vllm.model_executor.layers.fused_moe.config import fp8_w8a8_moe_quant_config as moe_config
    except ImportError:
        moe_config = None
    return _Api(fp8_utils.per_token_group_quant_fp8, matmul, fused_experts, moe_config,
                str(getattr(vllm, "__version__", "?")))


class Fp8Kernels:
    """Block-FP8 linear layers and MoE experts on vLLM's kernels (call :func:`unavailable_reason` first)."""

    def __init__(self) -> None:
        self.api = _resolve()

    def probe(self, device: torch.device) -> None:
        """Run both kernels once on small shapes, so a vLLM that cannot run them here is found before timing."""
        import torch

        from pytest_dsbench.modules.weights import activations, random_weight

        x = activations(4, 2 * FP8_BLOCK, device)
        self.linear(random_weight((FP8_BLOCK, 2 * FP8_BLOCK), device))(x)
        ids = torch.tensor([[0, 1], [1, 2], [2, 3], [3, 0]], device=device)
        weights = torch.full((4, 2), 0.5, device=device)
        self.moe_experts(4, FP8_BLOCK, 2 * FP8_BLOCK, device)(x, ids, weights)
        torch.cuda.synchronize(device)

    def linear(self, weight: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``x -> x @ weight^T`` with ``weight`` block-quantised now and ``x`` per-token-group quantised per call."""
        import torch

        w_q, w_s = block_quantize(weight)
        api = self.api

        def run(x: torch.Tensor) -> torch.Tensor:
            x_q, x_s = api.quant(x, FP8_BLOCK)
            out: torch.Tensor = api.matmul(x_q, w_q, x_s, w_s, [FP8_BLOCK, FP8_BLOCK], output_dtype=torch.bfloat16)
            return out

        return run

    def moe_experts(self, experts: int, intermediate: int, hidden: int,
                    device: torch.device) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """The routed experts as vLLM's fused MoE: ``(x, topk_ids, topk_weights) -> out``; weights made one expert
        at a time (no bf16 copy of the whole stack)."""
        import torch

        from pytest_dsbench.modules.weights import random_weight

        w13 = torch.empty(experts, 2 * intermediate, hidden, device=device, dtype=torch.float8_e4m3fn)
        w2 = torch.empty(experts, hidden, intermediate, device=device, dtype=torch.float8_e4m3fn)
        s13 = torch.empty(experts, math.ceil(2 * intermediate / FP8_BLOCK), math.ceil(hidden / FP8_BLOCK),
                          device=device, dtype=torch.float32)
        s2 = torch.empty(experts, math.ceil(hidden / FP8_BLOCK), math.ceil(intermediate / FP8_BLOCK),
                         device=device, dtype=torch.float32)
        for e in range(experts):
            w13[e], s13[e] = block_quantize(random_weight((2 * intermediate, hidden), device))
            w2[e], s2[e] = block_quantize(random_weight((hidden, intermediate), device))
        api, block = self.api, [FP8_BLOCK, FP8_BLOCK]
        if api.moe_quant_config is not None:
            config = api.moe_quant_config(w1_scale=s13, w2_scale=s2, block_shape=block)

            def run(x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
                out: torch.Tensor = api.fused_experts(x, w13, w2, weights, ids.to(torch.int32), quant_config=config)
                return out
        else:
            def run(x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
                out: torch.Tensor = api.fused_experts(x, w13, w2, weights, ids.to(torch.int32), use_fp8_w8a8=True,
                                                      w1_scale=s13, w2_scale=s2, block_shape=block)
                return out
        return run
