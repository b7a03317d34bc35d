"""DeepSeek-R1's dimensions, the scaled-down CI ones, and which scale a run uses.

``full`` is DeepSeek-R1's ``config.json`` (hidden 7168, vocab 129,280, 256 routed experts top-8 ...), for a GPU.
``ci`` keeps every structural choice (grouped top-k, shared expert, MLA with a latent KV cache, block-FP8 sizes in
multiples of 128) at dimensions a 2-core CPU runs in seconds, so CI exercises the same code path. Its vocabulary
stays large (131,072 x 256 bf16 = 64 MiB, twice the ci peak copy) so that embed_tokens gathers rows from memory
rather than from a cache, as at full size: with 2048 rows the 1 MiB table sat in L2 and the gather ran at 127% of
the measured host peak. Without
``--dsbench-modules-scale`` (``auto``) a run picks ``full`` when torch sees a CUDA device and ``ci`` otherwise.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from pytest_dsbench.options import MODULES_SCALES

FP8_BLOCK = 128
"""Block edge of DeepSeek-V3/R1's FP8 weight quantisation (``weight_block_size = [128, 128]``)."""


@dataclass(frozen=True)
class ModelDims:
    """The dimensions the modules are built with (names as in DeepSeek-V3's ``config.json``)."""

    hidden_size: int
    vocab_size: int
    intermediate_size: int
    moe_intermediate_size: int
    n_routed_experts: int
    num_experts_per_tok: int
    n_shared_experts: int
    n_group: int
    topk_group: int
    routed_scaling_factor: float
    q_lora_rank: int
    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    num_attention_heads: int
    rms_norm_eps: float = 1e-6

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


DEEPSEEK_R1 = ModelDims(
    hidden_size=7168, vocab_size=129_280, intermediate_size=18_432, moe_intermediate_size=2048,
    n_routed_experts=256, num_experts_per_tok=8, n_shared_experts=1, n_group=8, topk_group=4,
    routed_scaling_factor=2.5, q_lora_rank=1536, kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128,
    v_head_dim=128, num_attention_heads=128,
)
"""DeepSeek-R1 (and V3): ``config.json`` of deepseek-ai/DeepSeek-R1."""

CI_DIMS = ModelDims(
    hidden_size=256, vocab_size=131_072, intermediate_size=512, moe_intermediate_size=128, n_routed_experts=16,
    num_experts_per_tok=4, n_shared_experts=1, n_group=4, topk_group=2, routed_scaling_factor=2.5,
    q_lora_rank=128, kv_lora_rank=64, qk_rope_head_dim=16, qk_nope_head_dim=32, v_head_dim=32,
    num_attention_heads=4,
)


@dataclass(frozen=True)
class Scale:
    """Dimensions plus how a scale is run: token counts, decode context, EP ranks, rounds and round length."""

    name: str
    dims: ModelDims
    token_counts: tuple[int, ...]
    decode_context: int
    """KV-cache length (tokens per sequence) the absorbed MLA decode attends over."""
    ep_ranks: int
    """Expert-parallel ranks the EPLB routing transforms deal over (seed 000: ep32)."""
    rounds: int
    """Timed rounds per benchmark (at least the regression gate's 8 samples)."""
    warmup_rounds: int
    min_round_s: float
    """A round repeats the module until it lasts this long, so timer and launch overheads stay small."""
    peak_gemm_n: int
    """Edge of the square GEMM that measures the FLOP/s peak."""
    peak_copy_bytes: int
    """Size of the copy that measures the bandwidth peaks."""
    cpu_threads: int | None = None
    """torch's intra-op threads for the session (None: torch's default). CI machines are shared: one thread
    keeps OpenMP from spin-waiting against other processes, which made CPU timings jump 100-fold."""


SEED_TOKEN_COUNTS = tuple(2**i for i in range(12))
"""Seed 002's token counts: 1, 2, 4, ... 2048."""

SCALES: dict[str, Scale] = {
    "full": Scale("full", DEEPSEEK_R1, SEED_TOKEN_COUNTS, decode_context=4096, ep_ranks=32, rounds=20,
                  warmup_rounds=2, min_round_s=2e-3, peak_gemm_n=8192, peak_copy_bytes=1 << 30),
    "ci": Scale("ci", CI_DIMS, (1, 4, 16, 64, 256), decode_context=128, ep_ranks=4, rounds=10,
                warmup_rounds=1, min_round_s=5e-4, peak_gemm_n=512, peak_copy_bytes=32 << 20, cpu_threads=1),
}
assert set(SCALES) | {"auto"} == set(MODULES_SCALES), "options.MODULES_SCALES must name the scales here"


def select_scale(requested: str, cuda_available: bool) -> tuple[Scale, str]:
    """The scale to run and why: ``requested`` (``full``/``ci``) as given, ``auto`` by the device."""
    if requested == "auto":
        name = "full" if cuda_available else "ci"
        why = "a CUDA device is present" if cuda_available else "no CUDA device: scaled-down dimensions"
        return SCALES[name], f"auto: {why}"
    if requested not in SCALES:
        raise ValueError(f"unknown modules scale {requested!r}; expected one of {', '.join(MODULES_SCALES)}")
    return SCALES[requested], "--dsbench-modules-scale"
