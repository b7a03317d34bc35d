"""The routing transforms the EPLB pillar compares, plus placement and load helpers.

Two transforms replace a MoE router's ``topk_ids`` ([tokens, top_k]) to simulate perfect expert-parallel
load balance (docs: /work/shared/reference/eplb.md section 4):

* :func:`reference_topk_ids` is the seed patch (seed 000, LMDeploy v0.9.0 ``deepseek_v2.py``) reproduced
  literally, defects included: an int32 ordinal, a true division whose quotient takes
  ``torch.get_default_dtype()``, a hard int64 result. Slot ``i`` goes to expert ``(i % R) * E / R``, the first
  expert of rank ``i % R`` under linear placement.
* :func:`balanced_topk_ids` deals slots rank-first exactly like the reference (slot ``i`` is owned by rank
  ``(i + offset) % R``) but cycles through every expert of that rank, so per-rank loads equal the reference's
  while every local expert is used and no token repeats an expert. Integer-only and graph-safe; ``offset``
  carries a data-parallel shard's global slot ordinal. With ``offset=0`` and ``R | E`` it is bit-identical to
  SGLang's ``SGLANG_SIMULATE_ROUND_ROBIN_EXPERTS`` kernel with ``deal_offset=0``.

Both are pure torch and run on any device. Placement helpers describe which rank owns which expert in each
engine so owner ranks and per-rank loads can be computed the way the engine will see them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

TRANSFORM_MODES = ("reference", "balanced")
PLACEMENTS = ("linear", "ceil", "round_robin")


def reference_topk_ids(topk_ids: torch.Tensor, ranks: int, num_experts: int) -> torch.Tensor:
    """Seed 000's transform, verbatim: only the shape and device of ``topk_ids`` matter; result is int64.

    Kept literal on purpose (int32 ``arange``, true division, int64 cast) so the suite measures what the
    reference measured; its known defects are documented in eplb.md section 4.2 and pinned by self-tests.
    """
    import torch

    shape = topk_ids.shape
    ids = (torch.arange(0, topk_ids.numel(), dtype=torch.int32, device=topk_ids.device) % ranks) \
        * num_experts / ranks
    return ids.reshape(shape).to(dtype=torch.int64)


@dataclass(frozen=True)
class Placement:
    """Which physical experts each EP rank holds: ``experts_of_rank[r]`` lists rank ``r``'s experts."""

    name: str
    experts_of_rank: tuple[tuple[int, ...], ...]

    @property
    def ranks(self) -> int:
        """Number of EP ranks."""
        return len(self.experts_of_rank)

    @property
    def num_experts(self) -> int:
        """Number of experts placed over all ranks."""
        return sum(len(block) for block in self.experts_of_rank)

    def owner_list(self) -> list[int]:
        """``owner[e]`` = the rank holding expert ``e``."""
        owner = [-1] * self.num_experts
        for rank, block in enumerate(self.experts_of_rank):
            for expert in block:
                owner[expert] = rank
        return owner

    def is_contiguous(self) -> bool:
        """True when every rank holds one ascending run of expert ids, ranks in order (linear/ceil blocks)."""
        flat = [e for block in self.experts_of_rank for e in block]
        return flat == list(range(self.num_experts))


def make_placement(name: str, num_experts: int, ranks: int) -> Placement:
    """Build an engine placement: ``linear`` (vLLM default: blocks of E//R, the first E%R ranks get one more),
    ``ceil`` (LMDeploy: blocks of ceil(E/R), the last ranks may get fewer) or ``round_robin`` (vLLM
    ``--expert-placement-strategy round_robin``: expert e on rank e % R)."""
    if ranks < 1 or num_experts < 1:
        raise ValueError(f"placement needs ranks >= 1 and num_experts >= 1, got ranks={ranks}, "
                         f"num_experts={num_experts}")
    blocks: list[tuple[int, ...]]
    if name == "linear":
        base, rem = divmod(num_experts, ranks)
        blocks, start = [], 0
        for rank in range(ranks):
            size = base + (1 if rank < rem else 0)
            blocks.append(tuple(range(start, start + size)))
            start += size
    elif name == "ceil":
        size = -(-num_experts // ranks)
        blocks = [tuple(range(r * size, min((r + 1) * size, num_experts))) for r in range(ranks)]
    elif name == "round_robin":
        blocks = [tuple(range(r, num_experts, ranks)) for r in range(ranks)]
    else:
        raise ValueError(f"unknown placement {name!r}; expected one of {', '.join(PLACEMENTS)}")
    return Placement(name, tuple(blocks))


def _check_args(ranks: int, num_experts: int, placement: Placement | None) -> None:
    if ranks < 1:
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    if placement is not None:
        if placement.ranks != ranks or placement.num_experts != num_experts:
            raise ValueError(f"placement {placement.name!r} is for {placement.ranks} ranks x "
                             f"{placement.num_experts} experts, but the transform got ranks={ranks}, "
                             f"num_experts={num_experts}")
        empty = [r for r, block in enumerate(placement.experts_of_rank) if not block]
        if empty:
            raise ValueError(f"placement {placement.name!r} leaves rank(s) {empty} without experts "
                             f"(E={num_experts}, R={ranks}); a per-rank balanced routing is impossible")
    elif num_experts < ranks:
        raise ValueError(f"num_experts ({num_experts}) < ranks ({ranks}): some ranks would own no expert")


def balanced_topk_ids(
    topk_ids: torch.Tensor,
    ranks: int,
    num_experts: int,
    offset: int | torch.Tensor = 0,
    placement: Placement | None = None,
) -> torch.Tensor:
    """Rank-first deal over all experts: slot ``a = i + offset`` goes to rank ``a % R``, to that rank's
    ``(a // R) % len(block)``-th expert. Same shape, device and dtype as ``topk_ids``; values ignored.

    ``placement`` defaults to linear blocks (vLLM's default; for ``R | E`` also LMDeploy's and SGLang's).
    No expert repeats within a token when ``top_k <= R * min_block`` (always when ``top_k <= E`` and
    ``R | E``); beyond that no transform can keep both per-rank balance and distinct experts.
    """
    import torch

    _check_args(ranks, num_experts, placement)
    device = topk_ids.device
    ordinal = torch.arange(topk_ids.numel(), dtype=torch.int64, device=device) + offset
    rank = ordinal % ranks
    turn = ordinal // ranks
    if placement is None and num_experts % ranks == 0:
        per_rank = num_experts // ranks
        ids = rank * per_rank + turn % per_rank
    else:
        place = placement or make_placement("linear", num_experts, ranks)
        sizes = torch.tensor([len(b) for b in place.experts_of_rank], dtype=torch.int64, device=device)
        width = max(len(b) for b in place.experts_of_rank)  # from Python: no device-to-host sync
        table = torch.tensor([list(b) + [b[0]] * (width - len(b)) for b in place.experts_of_rank],
                             dtype=torch.int64, device=device)
        ids = table[rank, turn % sizes[rank]]
    return ids.reshape(topk_ids.shape).to(topk_ids.dtype)


def transform_topk_ids(
    mode: str,
    topk_ids: torch.Tensor,
    ranks: int,
    num_experts: int,
    offset: int | torch.Tensor = 0,
    placement: Placement | None = None,
) -> torch.Tensor:
    """Dispatch on ``mode`` ("reference" or "balanced"); the reference ignores offset and placement."""
    if mode == "reference":
        return reference_topk_ids(topk_ids, ranks, num_experts)
    if mode == "balanced":
        return balanced_topk_ids(topk_ids, ranks, num_experts, offset=offset, placement=placement)
    raise ValueError(f"unknown EPLB transform {mode!r}; expected one of {', '.join(TRANSFORM_MODES)}")


def intended_owner_ranks(numel: int, ranks: int, offset: int = 0) -> list[int]:
    """The rank the reference *intends* for each flat slot: ``(i + offset) % R`` (its real owner when R | E
    under linear placement)."""
    return [(i + offset) % ranks for i in range(numel)]


def owner_ranks(topk_ids: torch.Tensor, placement: Placement) -> torch.Tensor:
    """Owner rank of every id (same shape, int64) under ``placement``; ids outside [0, E) raise IndexError."""
    import torch

    owner = torch.tensor(placement.owner_list(), dtype=torch.int64, device=topk_ids.device)
    flat = topk_ids.reshape(-1).to(torch.int64)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= placement.num_experts):
        raise IndexError(f"expert ids must lie in [0, {placement.num_experts}); got min {int(flat.min())}, "
                         f"max {int(flat.max())}")
    return owner[flat].reshape(topk_ids.shape)


def expert_counts(topk_ids: torch.Tensor, num_experts: int) -> list[int]:
    """Slots routed to each expert (ignores negative ids, i.e. masked padding rows)."""
    import torch

    flat = topk_ids.reshape(-1).to(torch.int64)
    flat = flat[flat >= 0]
    return [int(c) for c in torch.bincount(flat, minlength=num_experts)[:num_experts].tolist()]


def rank_counts_from_expert_counts(counts: Sequence[int], placement: Placement) -> list[int]:
    """Sum per-expert counts into per-rank counts under ``placement``."""
    if len(counts) != placement.num_experts:
        raise ValueError(f"got {len(counts)} expert counts for a placement of {placement.num_experts} "
                         "experts")
    return [sum(int(counts[e]) for e in block) for block in placement.experts_of_rank]


def rank_counts(topk_ids: torch.Tensor, placement: Placement) -> list[int]:
    """Slots routed to each rank under ``placement``."""
    return rank_counts_from_expert_counts(expert_counts(topk_ids, placement.num_experts), placement)


@dataclass(frozen=True)
class LoadStats:
    """Load over a set of bins (ranks or experts): max, mean, max/mean (1.0 = perfect), max - min."""

    max: int
    min: int
    mean: float
    max_over_mean: float
    spread: int
    bins: int

    def as_dict(self) -> dict[str, float | int]:
        """JSON-friendly form for reports (``max_over_mean`` is the usual imbalance figure)."""
        return {"max": self.max, "min": self.min, "mean": self.mean, "max_over_mean": self.max_over_mean,
                "spread": self.spread, "bins": self.bins}


def load_stats(counts: Sequence[int]) -> LoadStats:
    """Max/mean statistics of a load vector; an all-zero vector has max_over_mean 0.0 (nothing routed)."""
    if not counts:
        raise ValueError("load_stats needs at least one bin")
    values = [int(c) for c in counts]
    mean = sum(values) / len(values)
    top = max(values)
    return LoadStats(max=top, min=min(values), mean=mean, max_over_mean=(top / mean) if mean else 0.0,
                     spread=top - min(values), bins=len(values))


def expected_rank_counts(numel: int, ranks: int, offset: int = 0) -> list[int]:
    """Per-rank slot counts of a rank-first deal of ``numel`` slots starting at ``offset`` (exact): every
    rank gets ``numel // R``, and the ``numel % R`` ranks from ``offset % R`` on get one more."""
    base, rem = divmod(numel, ranks)
    counts = [base] * ranks
    for k in range(rem):
        counts[(offset + k) % ranks] += 1
    return counts
