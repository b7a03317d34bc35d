"""FLOPs and bytes of each module, from the dimensions alone: the one place the roofline's numerators come from.

The model is the *minimum traffic* of an ideal kernel: every weight the module touches is read once, its input
activations are read once and its outputs written once (bf16, 2 bytes); intermediates that a fused kernel keeps
on chip are not counted. FLOPs count the matrix products (2 per multiply-add); elementwise work (SiLU, RMSNorm,
RoPE, softmax) is left out, as rooflines of these modules usually do. A number here is therefore a floor: the
achieved figures and the fraction of peak derived from it say how close a run came to the ideal.

Weights are bf16 (2 bytes an element) or block-FP8: 1 byte an element plus one float32 scale per 128x128 block.
Traffic is split by the memory it crosses (``device``, ``host``, ``h2d``), because embed_tokens on the CPU and its
copy to the GPU are bounded by other bandwidths than the GPU's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pytest_dsbench.modules.config import FP8_BLOCK, ModelDims

ACT_BYTES = 2
"""bf16 activations."""
INDEX_BYTES = 8
"""int64 token ids."""
SCALE_BYTES = 4
"""float32 block scales of FP8 weights."""
DTYPES = ("bf16", "fp8")
MEMORIES = ("device", "host", "h2d")


@dataclass(frozen=True)
class ModuleCost:
    """FLOPs and bytes of one call of a module, bytes per memory path (``device``, ``host``, ``h2d``)."""

    flops: int
    traffic: dict[str, int] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        """All bytes moved, over every memory path."""
        return sum(self.traffic.values())

    @property
    def intensity_flop_per_byte(self) -> float:
        return self.flops / self.bytes if self.bytes else math.inf


def weight_bytes(rows: int, cols: int, dtype: str) -> int:
    """Bytes of a ``rows x cols`` weight: bf16, or FP8 with a float32 scale per 128x128 block."""
    if dtype == "bf16":
        return rows * cols * 2
    if dtype == "fp8":
        return rows * cols + math.ceil(rows / FP8_BLOCK) * math.ceil(cols / FP8_BLOCK) * SCALE_BYTES
    raise ValueError(f"unknown weight dtype {dtype!r}; expected one of {', '.join(DTYPES)}")


def embed_tokens(dims: ModelDims, tokens: int, where: str) -> ModuleCost:
    """Gather ``tokens`` rows of the embedding: ids read, rows read and written. ``where``: ``device`` (on the GPU),
    ``host`` (on the CPU) or ``host+h2d`` (on the CPU, then the rows copied to the GPU)."""
    gather = INDEX_BYTES * tokens + 2 * tokens * dims.hidden_size * ACT_BYTES
    if where == "host+h2d":
        return ModuleCost(0, {"host": gather, "h2d": tokens * dims.hidden_size * ACT_BYTES})
    if where not in ("device", "host"):
        raise ValueError(f"unknown embed_tokens placement {where!r}; expected device, host or host+h2d")
    return ModuleCost(0, {where: gather})


def _ffn_weights(hidden: int, intermediate: int, dtype: str) -> int:
    """gate_up_proj (2I x H) and down_proj (H x I)."""
    return weight_bytes(2 * intermediate, hidden, dtype) + weight_bytes(hidden, intermediate, dtype)


def _io(tokens: int, hidden: int) -> int:
    return 2 * tokens * hidden * ACT_BYTES


def mlp(dims: ModelDims, tokens: int, intermediate: int, dtype: str = "bf16") -> ModuleCost:
    """SwiGLU MLP (DeepSeek's dense layers with ``intermediate_size``, one expert with ``moe_intermediate_size``):
    3 x 2 x tokens x hidden x intermediate FLOPs, the three weights once, input and output."""
    flops = 6 * tokens * dims.hidden_size * intermediate
    return ModuleCost(flops, {"device": _ffn_weights(dims.hidden_size, intermediate, dtype)
                              + _io(tokens, dims.hidden_size)})


def moe(dims: ModelDims, tokens: int, active_experts: int, dtype: str = "bf16") -> ModuleCost:
    """The MoE layer: gate (bf16, hidden x experts, fp32 correction bias), top-k routed experts per token and the
    shared expert(s). Only the ``active_experts`` that receive a token have their weights read."""
    h, inter, e = dims.hidden_size, dims.moe_intermediate_size, dims.n_routed_experts
    shared_inter = inter * dims.n_shared_experts
    flops = (2 * tokens * h * e
             + 6 * tokens * dims.num_experts_per_tok * h * inter
             + 6 * tokens * h * shared_inter)
    weights = (weight_bytes(e, h, "bf16") + 4 * e
               + active_experts * _ffn_weights(h, inter, dtype)
               + _ffn_weights(h, shared_inter, dtype))
    return ModuleCost(flops, {"device": weights + _io(tokens, h)})


def mla_linear_params(dims: ModelDims) -> int:
    """Elements of MLA's five projections: q_a, q_b, kv_a (with the RoPE key), kv_b, o."""
    nh = dims.num_attention_heads
    return (dims.hidden_size * dims.q_lora_rank
            + dims.q_lora_rank * nh * dims.qk_head_dim
            + dims.hidden_size * (dims.kv_lora_rank + dims.qk_rope_head_dim)
            + dims.kv_lora_rank * nh * (dims.qk_nope_head_dim + dims.v_head_dim)
            + nh * dims.v_head_dim * dims.hidden_size)


def _mla_weight_bytes(dims: ModelDims) -> int:
    """The projections plus the two RMSNorm weights (q_a_layernorm, kv_a_layernorm), bf16."""
    return 2 * (mla_linear_params(dims) + dims.q_lora_rank + dims.kv_lora_rank)


def mla_prefill(dims: ModelDims, tokens: int) -> ModuleCost:
    """MLA over one causal sequence of ``tokens`` (no cache): the projections for every token, and attention
    over the ``tokens * (tokens + 1) / 2`` causal query-key pairs (QK over nope+rope, PV over v)."""
    nh = dims.num_attention_heads
    pairs = tokens * (tokens + 1) // 2
    flops = 2 * tokens * mla_linear_params(dims) + 2 * nh * pairs * (dims.qk_head_dim + dims.v_head_dim)
    return ModuleCost(flops, {"device": _mla_weight_bytes(dims) + _io(tokens, dims.hidden_size)})


def mla_decode(dims: ModelDims, batch: int, context: int) -> ModuleCost:
    """One decode step of ``batch`` sequences, each over a latent KV cache of ``context`` tokens, with the
    absorbed weights (kv_b split into W_UK, folded into the query, and W_UV, applied to the latent output): the
    projections (every weight once per token), scores over latent + RoPE key, output over the latent; the cache
    read once and the new entry written."""
    nh, kvl, rope = dims.num_attention_heads, dims.kv_lora_rank, dims.qk_rope_head_dim
    flops = 2 * batch * mla_linear_params(dims) + 2 * batch * nh * context * (kvl + rope) \
        + 2 * batch * nh * context * kvl
    cache = batch * context * (kvl + rope) * ACT_BYTES + batch * (kvl + rope) * ACT_BYTES
    return ModuleCost(flops, {"device": _mla_weight_bytes(dims) + cache + _io(batch, dims.hidden_size)})


def lm_head(dims: ModelDims, tokens: int) -> ModuleCost:
    """The output projection (vocab x hidden, bf16 as in the FP8 checkpoint): weights, input, bf16 logits."""
    h, v = dims.hidden_size, dims.vocab_size
    return ModuleCost(2 * tokens * h * v, {"device": weight_bytes(v, h, "bf16") + tokens * h * ACT_BYTES
                                           + tokens * v * ACT_BYTES})
