"""DeepSeek-R1's modules in plain torch, with random weights, each prepared for one token count.

Every builder returns a :class:`Prepared`: a zero-argument ``run`` (one call of the module on inputs made in
advance, so only the module is timed), its :class:`~pytest_dsbench.modules.cost.ModuleCost` and facts about the
call (experts a MoE call activated). Implementations follow DeepSeek-V3's reference modelling code:

* ``embed_tokens``: ``F.embedding`` on the weight's device, optionally copied to the GPU afterwards; every call
  gathers other rows (a seeded pass through the whole vocabulary), so no call finds its rows in a cache;
* MLP / expert: SwiGLU with fused gate_up (``down(silu(gate(x)) * up(x))``);
* MoE: the noaux_tc gate (sigmoid scores, ``e_score_correction_bias`` for the choice only, grouped top-k: best
  ``topk_group`` of ``n_group`` groups by the sum of each group's top-2, then top-k inside them, weights
  renormalised and times ``routed_scaling_factor``), or the gate followed by the EPLB transform that replaces its
  choice (:func:`pytest_dsbench.eplb.transform_topk_ids`, seed 000); the routed experts one by one (the reference
  loop), plus the shared expert;
* MLA: low-rank q (q_a, RMSNorm, q_b), latent kv (kv_a with the RoPE key, RMSNorm, kv_b), RoPE, attention, o_proj.
  Prefill attends causally within one sequence; decode uses the absorbed weights over a latent KV cache;
* lm_head: ``x @ W^T`` to bf16 logits.

FP8 block-quantised variants take their linear / MoE kernels from :mod:`pytest_dsbench.modules.fp8`.

These are reference implementations, timed as such: every op is one eager kernel launch, so at small token counts
the host's launch rate, not the GPU, sets the time of the many-op modules (MLA: ~80 ops a call, flat at ~1 ms
on an H100 from 1 to 512 tokens while its 374 MB of weights need 0.13 ms), and the MoE loop reads each active
expert in its own small GEMMs. The tables say so (:data:`IMPLEMENTATION_NOTE`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_dsbench.modules import cost
from pytest_dsbench.modules.config import ModelDims
from pytest_dsbench.modules.weights import activations, generator, random_weight

if TYPE_CHECKING:
    import torch

    from pytest_dsbench.modules.fp8 import Fp8Kernels

Linear = Callable[["torch.Tensor"], "torch.Tensor"]
KERNELS = {"bf16": "torch", "fp8": "vllm"}
"""Whose kernels run each dtype: plain torch for bf16, vLLM's for block-FP8."""
IMPLEMENTATIONS = {
    "torch": "torch reference",
    "vllm": "vLLM kernels",
}
"""What the tables call each kernel source (:data:`KERNELS`); :data:`IMPLEMENTATION_NOTE` says what it means."""
IMPLEMENTATION_NOTE = (
    "bf16 modules are the torch reference (DeepSeek-V3's modelling code in eager torch ops: a kernel launch per "
    "op, the MoE experts one by one in a Python loop after a host sync, MLA unfused), not an engine's fused "
    "kernels: where an engine runs faster, these figures are no bound on it; fp8 modules run vLLM's block-FP8 "
    "kernels (w8a8 block matmul, fused_experts) with the gate in torch"
)
ROUTINGS = ("gate", "eplb-reference", "eplb-balanced")
"""MoE routing: the model's gate, or the gate with its choice replaced by seed 000's reference transform or the
project's balanced one."""


@dataclass
class Prepared:
    """One module, ready to be called on ``tokens`` tokens."""

    run: Callable[[], Any]
    cost: cost.ModuleCost
    tokens: int
    facts: dict[str, Any] = field(default_factory=dict)


def bf16_linear(weight: torch.Tensor) -> Linear:
    import torch.nn.functional as F

    return lambda x: F.linear(x, weight)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    import torch

    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight


def apply_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary embedding (rotate-half form) on the last dimension of ``x`` [..., tokens, heads?, dim]."""
    import torch

    dim = x.shape[-1]
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, device=x.device, dtype=torch.float32) / dim))
    angles = positions.float()[:, None] * inv[None, :]
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)
    while cos.dim() < x.dim():
        cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    half = dim // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


# -- embed_tokens ---------------------------------------------------------------------------------------------
def id_batches(vocab_size: int, tokens: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The whole vocabulary in a seeded random order, cut into batches of ``tokens`` ids (views, made here).

    Calling the embedding on one batch after the other gathers rows it has not touched for a whole pass over the
    table (1.85 GB at DeepSeek-R1's size, far above any CPU cache or the GPU's 50 MB of L2), so the figures are
    those of rows fetched from memory. The same ids on every call kept the rows cache-resident after the first
    round, and the CPU gather then ran at several times the measured host bandwidth. Where the vocabulary is
    shorter than ``tokens`` its permutation repeats."""
    import torch

    gen = generator(device)
    passes = -(-tokens // vocab_size)
    order = torch.cat([torch.randperm(vocab_size, device=device, generator=gen) for _ in range(passes)])
    count = len(order) // tokens
    return order[: count * tokens].view(count, tokens).unbind(0)


class EmbedTokens:
    """The token embedding on ``weight_device``; with ``copy_to`` its output is copied there (CPU then H2D)."""

    def __init__(self, dims: ModelDims, weight_device: torch.device, make_on: torch.device) -> None:
        self.dims = dims
        self.weight = random_weight((dims.vocab_size, dims.hidden_size), make_on, fan_in=1).to(weight_device)

    def prepare(self, tokens: int, copy_to: torch.device | None = None) -> Prepared:
        """Each call gathers the next batch of :func:`id_batches` (cycling; taking the next prepared view is the
        only work outside the module, tens of nanoseconds)."""
        import itertools

        import torch.nn.functional as F

        weight = self.weight
        batches = id_batches(self.dims.vocab_size, tokens, weight.device)
        ids = itertools.cycle(batches)
        facts = {"id_batches": len(batches)}
        if copy_to is None:
            where = "host" if weight.device.type == "cpu" else "device"
            return Prepared(lambda: F.embedding(next(ids), weight), cost.embed_tokens(self.dims, tokens, where),
                            tokens, facts)
        target = copy_to
        return Prepared(lambda: F.embedding(next(ids), weight).to(target),
                        cost.embed_tokens(self.dims, tokens, "host+h2d"), tokens, facts)


# -- MLP and experts -------------------------------------------------------------------------------------------
class Mlp:
    """SwiGLU MLP of ``intermediate`` (dense layers: intermediate_size; one expert: moe_intermediate_size)."""

    def __init__(self, dims: ModelDims, intermediate: int, device: torch.device,
                 fp8: Fp8Kernels | None = None) -> None:
        self.dims, self.intermediate, self.device = dims, intermediate, device
        w13 = random_weight((2 * intermediate, dims.hidden_size), device)
        w2 = random_weight((dims.hidden_size, intermediate), device)
        self.dtype = "fp8" if fp8 is not None else "bf16"
        self.gate_up, self.down = (fp8.linear(w13), fp8.linear(w2)) if fp8 is not None else \
            (bf16_linear(w13), bf16_linear(w2))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)

    def prepare(self, tokens: int) -> Prepared:
        x = activations(tokens, self.dims.hidden_size, self.device)
        return Prepared(lambda: self(x), cost.mlp(self.dims, tokens, self.intermediate, self.dtype), tokens)


# -- MoE -------------------------------------------------------------------------------------------------------
def grouped_topk(logits: torch.Tensor, bias: torch.Tensor, dims: ModelDims) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek-V3's noaux_tc routing: (topk_ids int64 [T, k], topk_weights float32 [T, k])."""
    import torch

    tokens, experts = logits.shape
    scores = logits.float().sigmoid()
    choice = scores + bias
    per_group = experts // dims.n_group
    group_scores = choice.view(tokens, dims.n_group, per_group).topk(2, dim=-1).values.sum(-1)
    groups = group_scores.topk(dims.topk_group, dim=-1, sorted=False).indices
    group_mask = torch.zeros_like(group_scores).scatter_(1, groups, 1.0)
    expert_mask = group_mask.unsqueeze(-1).expand(tokens, dims.n_group, per_group).reshape(tokens, experts)
    masked = choice.masked_fill(expert_mask == 0, float("-inf"))
    ids = masked.topk(dims.num_experts_per_tok, dim=-1, sorted=False).indices
    weights = scores.gather(1, ids)
    weights = weights / (weights.sum(-1, keepdim=True) + 1e-20) * dims.routed_scaling_factor
    return ids, weights


def torch_experts(x: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, w13: torch.Tensor,
                  w2: torch.Tensor) -> torch.Tensor:
    """The routed experts one at a time (the reference modelling code's loop): tokens sorted by expert, each
    expert's SwiGLU on its tokens, weighted and summed back."""
    import torch
    import torch.nn.functional as F

    top_k = ids.shape[1]
    flat = ids.flatten()
    order = flat.argsort()
    counts = torch.bincount(flat, minlength=w13.shape[0]).tolist()
    token_of = order // top_k
    slot_weight = weights.flatten()[order].to(x.dtype).unsqueeze(-1)
    out = torch.zeros_like(x)
    start = 0
    for expert, count in enumerate(counts):
        if count == 0:
            continue
        rows = token_of[start:start + count]
        gate, up = F.linear(x[rows], w13[expert]).chunk(2, dim=-1)
        out.index_add_(0, rows, F.linear(F.silu(gate) * up, w2[expert]) * slot_weight[start:start + count])
        start += count
    return out


class Moe:
    """The MoE layer: gate (+ optional EPLB transform of its choice), routed experts, shared expert."""

    def __init__(self, dims: ModelDims, device: torch.device, routing: str, ep_ranks: int,
                 fp8: Fp8Kernels | None = None) -> None:
        import torch

        if routing not in ROUTINGS:
            raise ValueError(f"unknown MoE routing {routing!r}; expected one of {', '.join(ROUTINGS)}")
        self.dims, self.device, self.routing, self.ep_ranks, self.fp8 = dims, device, routing, ep_ranks, fp8
        h, inter, e = dims.hidden_size, dims.moe_intermediate_size, dims.n_routed_experts
        self.gate = random_weight((e, h), device)
        self.bias = torch.empty(e, device=device, dtype=torch.float32).uniform_(-0.1, 0.1,
                                                                                 generator=generator(device))
        self.shared = Mlp(dims, inter * dims.n_shared_experts, device, fp8)
        self.dtype = "fp8" if fp8 is not None else "bf16"
        if fp8 is None:
            self.w13 = random_weight((e, 2 * inter, h), device)
            self.w2 = random_weight((e, h, inter), device)
            self.experts: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] = \
                lambda x, ids, w: torch_experts(x, ids, w, self.w13, self.w2)
        else:
            self.experts = fp8.moe_experts(e, inter, h, device)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch.nn.functional as F

        from pytest_dsbench.eplb import transform_topk_ids

        ids, weights = grouped_topk(F.linear(x, self.gate), self.bias, self.dims)
        if self.routing != "gate":
            ids = transform_topk_ids(self.routing.removeprefix("eplb-"), ids, self.ep_ranks,
                                     self.dims.n_routed_experts)
        return ids, weights

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        ids, weights = self.route(x)
        return self.experts(x, ids, weights) + self.shared(x)

    def prepare(self, tokens: int) -> Prepared:
        x = activations(tokens, self.dims.hidden_size, self.device)
        active = int(self.route(x)[0].unique().numel())  # type: ignore[no-untyped-call]
        return Prepared(lambda: self(x), cost.moe(self.dims, tokens, active, self.dtype), tokens,
                        {"active_experts": active})


# -- MLA -------------------------------------------------------------------------------------------------------
class Mla:
    """Multi-head latent attention; :meth:`prepare_prefill` and :meth:`prepare_decode` (absorbed weights)."""

    def __init__(self, dims: ModelDims, device: torch.device) -> None:
        import torch

        self.dims, self.device = dims, device
        nh, h = dims.num_attention_heads, dims.hidden_size
        self.q_a = random_weight((dims.q_lora_rank, h), device)
        self.q_norm = torch.ones(dims.q_lora_rank, device=device, dtype=torch.bfloat16)
        self.q_b = random_weight((nh * dims.qk_head_dim, dims.q_lora_rank), device)
        self.kv_a = random_weight((dims.kv_lora_rank + dims.qk_rope_head_dim, h), device)
        self.kv_norm = torch.ones(dims.kv_lora_rank, device=device, dtype=torch.bfloat16)
        self.kv_b = random_weight((nh * (dims.qk_nope_head_dim + dims.v_head_dim), dims.kv_lora_rank), device)
        self.o = random_weight((h, nh * dims.v_head_dim), device)
        kv_b = self.kv_b.view(nh, dims.qk_nope_head_dim + dims.v_head_dim, dims.kv_lora_rank)
        self.w_uk = kv_b[:, : dims.qk_nope_head_dim, :].contiguous()  # [nh, nope, kv_lora]
        self.w_uv = kv_b[:, dims.qk_nope_head_dim:, :].transpose(1, 2).contiguous()  # [nh, kv_lora, v]
        self.scale = dims.qk_head_dim ** -0.5

    def _query(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch.nn.functional as F

        d = self.dims
        q = F.linear(rms_norm(F.linear(x, self.q_a), self.q_norm, d.rms_norm_eps), self.q_b)
        q = q.view(x.shape[0], d.num_attention_heads, d.qk_head_dim)
        q_nope, q_pe = q.split([d.qk_nope_head_dim, d.qk_rope_head_dim], dim=-1)  # type: ignore[no-untyped-call]
        return q_nope, apply_rope(q_pe, positions)

    def _latent(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        import torch.nn.functional as F

        d = self.dims
        c_kv, k_pe = F.linear(x, self.kv_a).split(  # type: ignore[no-untyped-call]
            [d.kv_lora_rank, d.qk_rope_head_dim], dim=-1)
        return rms_norm(c_kv, self.kv_norm, d.rms_norm_eps), apply_rope(k_pe, positions)

    def prefill(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        d, t, nh = self.dims, x.shape[0], self.dims.num_attention_heads
        q_nope, q_pe = self._query(x, positions)
        c_kv, k_pe = self._latent(x, positions)
        kv = F.linear(c_kv, self.kv_b).view(t, nh, d.qk_nope_head_dim + d.v_head_dim)
        k_nope, v = kv.split([d.qk_nope_head_dim, d.v_head_dim], dim=-1)  # type: ignore[no-untyped-call]
        q = torch.cat([q_nope, q_pe], -1).transpose(0, 1).unsqueeze(0)  # [1, heads, tokens, dim]
        k = torch.cat([k_nope, k_pe.unsqueeze(1).expand(t, nh, d.qk_rope_head_dim)], -1).transpose(0, 1).unsqueeze(0)
        out = F.scaled_dot_product_attention(q, k, v.transpose(0, 1).unsqueeze(0), is_causal=True, scale=self.scale)
        return F.linear(out[0].transpose(0, 1).reshape(t, nh * d.v_head_dim), self.o)

    def decode(self, x: torch.Tensor, cache_kv: torch.Tensor, cache_pe: torch.Tensor) -> torch.Tensor:
        """One new token per sequence at the cache's last position, attending over the whole cache."""
        import torch
        import torch.nn.functional as F

        d, b, ctx = self.dims, x.shape[0], cache_kv.shape[1]
        positions = torch.full((b,), ctx - 1, device=x.device, dtype=torch.int64)
        q_nope, q_pe = self._query(x, positions)
        c_kv, k_pe = self._latent(x, positions)
        cache_kv[:, ctx - 1] = c_kv
        cache_pe[:, ctx - 1] = k_pe
        q_latent = torch.einsum("bhn,hnc->bhc", q_nope, self.w_uk)
        scores = (q_latent @ cache_kv.transpose(1, 2) + q_pe @ cache_pe.transpose(1, 2)) * self.scale
        probs = scores.float().softmax(-1).to(x.dtype)
        out_latent = probs @ cache_kv  # [b, nh, kv_lora]
        out = torch.einsum("bhc,hcv->bhv", out_latent, self.w_uv)
        return F.linear(out.reshape(b, d.num_attention_heads * d.v_head_dim), self.o)

    def prepare_prefill(self, tokens: int) -> Prepared:
        import torch

        x = activations(tokens, self.dims.hidden_size, self.device)
        positions = torch.arange(tokens, device=self.device)
        return Prepared(lambda: self.prefill(x, positions), cost.mla_prefill(self.dims, tokens), tokens)

    def prepare_decode(self, batch: int, context: int) -> Prepared:
        import torch

        d = self.dims
        x = activations(batch, d.hidden_size, self.device)
        gen = generator(self.device)
        cache_kv = torch.randn(batch, context, d.kv_lora_rank, device=self.device, dtype=torch.bfloat16,
                               generator=gen)
        cache_pe = torch.randn(batch, context, d.qk_rope_head_dim, device=self.device, dtype=torch.bfloat16,
                               generator=gen)
        return Prepared(lambda: self.decode(x, cache_kv, cache_pe), cost.mla_decode(d, batch, context), batch,
                        {"context": context})


# -- lm_head ---------------------------------------------------------------------------------------------------
class LmHead:
    """The output projection to the vocabulary (bf16 logits)."""

    def __init__(self, dims: ModelDims, device: torch.device) -> None:
        self.dims, self.device = dims, device
        self.weight = random_weight((dims.vocab_size, dims.hidden_size), device)

    def prepare(self, tokens: int) -> Prepared:
        import torch.nn.functional as F

        x = activations(tokens, self.dims.hidden_size, self.device)
        weight = self.weight
        return Prepared(lambda: F.linear(x, weight), cost.lm_head(self.dims, tokens), tokens)
