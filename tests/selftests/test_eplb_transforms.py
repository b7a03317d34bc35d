"""The pure-torch transforms: the seed's reference reproduced literally, the balanced one and its
invariants (eplb.md 4.4), over token counts, top_k, experts and ranks (ranks > top_k, ranks not dividing
experts, R = 1)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pytest_dsbench.eplb.transforms import (
    balanced_topk_ids,
    expected_rank_counts,
    expert_counts,
    intended_owner_ranks,
    load_stats,
    make_placement,
    owner_ranks,
    rank_counts,
    reference_topk_ids,
    transform_topk_ids,
)

torch = pytest.importorskip("torch")
DTYPES = (torch.int32, torch.int64)


def seed_patch(topk_ids: torch.Tensor, ranks: int, num_experts: int) -> torch.Tensor:
    """The four lines of seed 000 (LMDeploy v0.9.0 deepseek_v2.py), copied verbatim as the oracle."""
    shape = topk_ids.shape
    topk_ids = (
        (torch.arange(0, topk_ids.numel(), dtype=torch.int32, device=topk_ids.device) % ranks)
        * num_experts
        / ranks
    )
    topk_ids = topk_ids.reshape(shape).to(dtype=torch.int64)
    return topk_ids


@st.composite
def routing_case(draw: st.DrawFn, *, divisible: bool | None = None) -> tuple[torch.Tensor, int, int, int]:
    """(topk_ids [T, K] with random values, ranks R, experts E, top_k K) with K <= E and R <= E."""
    experts = draw(st.integers(1, 300))
    ranks = draw(st.integers(1, min(experts, 64)))
    if divisible is True:
        experts = ranks * max(1, experts // ranks)
    elif divisible is False:
        assume(experts % ranks != 0)
    top_k = draw(st.integers(1, min(experts, 12)))
    tokens = draw(st.integers(0, 70))
    dtype = draw(st.sampled_from(DTYPES))
    values = torch.randint(
        0, experts, (tokens, top_k), generator=torch.Generator().manual_seed(tokens), dtype=dtype
    )
    return values, ranks, experts, top_k


# ------------------------------------------------------------------------------------------ reference


@given(routing_case())
@settings(max_examples=150, deadline=None)
def test_reference_is_the_seed_patch_bit_for_bit(case: tuple[torch.Tensor, int, int, int]) -> None:
    x, ranks, experts, _ = case
    got = reference_topk_ids(x, ranks, experts)
    want = seed_patch(x, ranks, experts)
    assert got.dtype == torch.int64 and got.shape == x.shape
    assert torch.equal(got, want)


def test_reference_uses_only_the_first_expert_of_each_rank() -> None:
    ids = reference_topk_ids(torch.zeros(3, 8, dtype=torch.int64), 4, 256)
    assert ids[0].tolist() == [0, 64, 128, 192, 0, 64, 128, 192]


def test_reference_repeats_experts_within_a_token_when_ranks_below_top_k() -> None:
    assert reference_topk_ids(torch.zeros(1, 8), 1, 256).tolist() == [[0] * 8]
    assert len(set(reference_topk_ids(torch.zeros(1, 8), 4, 256)[0].tolist())) == 4


def test_reference_misplaces_load_when_ranks_do_not_divide_experts() -> None:
    """E=256, R=3: ids [0, 85, 170]; expert 85 lives on rank 0 with linear (86, 85, 85) blocks."""
    ids = reference_topk_ids(torch.zeros(96, 8), 3, 256)
    assert sorted(set(ids.flatten().tolist())) == [0, 85, 170]
    assert rank_counts(ids, make_placement("linear", 256, 3)) == [512, 256, 0]


def test_reference_is_placement_unaware_under_round_robin() -> None:
    ids = reference_topk_ids(torch.zeros(96, 8), 8, 256)
    assert rank_counts(ids, make_placement("round_robin", 256, 8)) == [768, 0, 0, 0, 0, 0, 0, 0]


def test_reference_quotient_follows_the_default_dtype() -> None:
    """Pinned defect: under a bf16 default, E=288/R=32 gives 261 -> 260 and E=256/R=3 gives 170 -> 171."""
    old = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.bfloat16)
        assert reference_topk_ids(torch.zeros(32), 32, 288)[29].item() == 260
        assert reference_topk_ids(torch.zeros(3), 3, 256).tolist() == [0, 85, 171]
        assert balanced_topk_ids(torch.zeros(32, dtype=torch.int64), 32, 288)[29].item() == 29 * 9
    finally:
        torch.set_default_dtype(old)
    assert reference_topk_ids(torch.zeros(32), 32, 288)[29].item() == 261


# ------------------------------------------------------------------------------------------- balanced


@given(routing_case())
@settings(max_examples=200, deadline=None)
def test_balanced_invariants(case: tuple[torch.Tensor, int, int, int]) -> None:
    x, ranks, experts, top_k = case
    place = make_placement("linear", experts, ranks)
    got = balanced_topk_ids(x, ranks, experts)
    # 1. shape, device, dtype
    assert got.shape == x.shape and got.device == x.device and got.dtype == x.dtype
    if x.numel() == 0:
        return
    # 2. range
    assert int(got.min()) >= 0 and int(got.max()) < experts
    # 3. deterministic and input-agnostic
    assert torch.equal(got, balanced_topk_ids(torch.zeros_like(x), ranks, experts))
    # 4. per-rank counts exactly those of a rank-first deal (max - min <= 1)
    counts = rank_counts(got, place)
    assert counts == expected_rank_counts(x.numel(), ranks)
    assert load_stats(counts).spread <= 1
    # 5. same owner rank as the one the reference intends for every slot (its real owner when R | E)
    assert owner_ranks(got, place).flatten().tolist() == intended_owner_ranks(x.numel(), ranks)
    if experts % ranks == 0:
        assert torch.equal(owner_ranks(got, place), owner_ranks(reference_topk_ids(x, ranks, experts), place))
    # 6. no duplicate within a token (whenever top_k fits the smallest rank block), all local experts used
    if top_k <= ranks * (experts // ranks):
        assert all(len(set(row)) == len(row) for row in got.tolist())
    per_expert = expert_counts(got, experts)
    for block, rank_count in zip(place.experts_of_rank, counts, strict=True):
        local = [per_expert[e] for e in block]
        assert max(local) - min(local) <= 1
        assert sum(1 for c in local if c) == min(len(block), rank_count)


@given(routing_case(divisible=False))
@settings(max_examples=100, deadline=None)
def test_balanced_handles_ranks_not_dividing_experts_for_each_placement(
    case: tuple[torch.Tensor, int, int, int],
) -> None:
    x, ranks, experts, _ = case
    for name in ("linear", "ceil", "round_robin"):
        place = make_placement(name, experts, ranks)
        if any(not block for block in place.experts_of_rank):
            with pytest.raises(ValueError, match="without experts"):
                balanced_topk_ids(x, ranks, experts, placement=place)
            continue
        got = balanced_topk_ids(x, ranks, experts, placement=place)
        assert rank_counts(got, place) == expected_rank_counts(x.numel(), ranks)


def test_balanced_with_one_rank_spreads_over_all_experts() -> None:
    ids = balanced_topk_ids(torch.zeros(2, 8, dtype=torch.int64), 1, 256)
    assert ids.tolist() == [list(range(8)), list(range(8, 16))]


def test_balanced_round_robin_placement_is_exactly_balanced() -> None:
    place = make_placement("round_robin", 256, 8)
    ids = balanced_topk_ids(torch.zeros(96, 8, dtype=torch.int64), 8, 256, placement=place)
    assert rank_counts(ids, place) == [96] * 8


def test_balanced_is_sglang_round_robin_kernel_with_zero_offset() -> None:
    """SGLang's RANDOM=False kernel: deal = t*K + j + deal_offset; gid = (deal % R) * L + (deal // R) % L."""
    tokens, top_k, ranks, experts = 37, 8, 16, 256
    per_rank = experts // ranks
    for deal_offset in (0, 5):
        kernel = [
            [
                ((t * top_k + j + deal_offset) % ranks) * per_rank
                + ((t * top_k + j + deal_offset) // ranks) % per_rank
                for j in range(top_k)
            ]
            for t in range(tokens)
        ]
        ours = balanced_topk_ids(
            torch.zeros(tokens, top_k, dtype=torch.int32), ranks, experts, offset=deal_offset
        )
        assert ours.tolist() == kernel


def test_balanced_is_integer_safe_beyond_int32_ordinals() -> None:
    offset = 2**31 - 3
    ids = balanced_topk_ids(torch.zeros(2, 4, dtype=torch.int64), 3, 12, offset=offset)
    want = [((a % 3) * 4 + (a // 3) % 4) for a in range(offset, offset + 8)]
    assert ids.flatten().tolist() == want


@given(
    st.lists(st.integers(0, 40), min_size=1, max_size=8),
    st.sampled_from([1, 4, 8]),
    st.sampled_from([(256, 32), (288, 32), (256, 3), (16, 4)]),
)
@settings(max_examples=100, deadline=None)
def test_data_parallel_offsets_keep_global_balance(
    shard_tokens: list[int], top_k: int, experts_ranks: tuple[int, int]
) -> None:
    """eplb.md 4.4 invariant 7: prefix-sum offsets give global spread <= 1; per-shard restarts only <= S."""
    experts, ranks = experts_ranks
    place = make_placement("linear", experts, ranks)
    with_offset, restart = Counter[int](), Counter[int]()
    offset = 0
    for tokens in shard_tokens:
        like = torch.zeros(tokens, top_k, dtype=torch.int64)
        with_offset.update(
            owner_ranks(balanced_topk_ids(like, ranks, experts, offset=offset), place).flatten().tolist()
        )
        restart.update(owner_ranks(balanced_topk_ids(like, ranks, experts), place).flatten().tolist())
        offset += tokens * top_k
    global_counts = [with_offset[r] for r in range(ranks)]
    assert max(global_counts) - min(global_counts) <= 1
    restart_counts = [restart[r] for r in range(ranks)]
    assert max(restart_counts) - min(restart_counts) <= len(shard_tokens)


def test_decode_one_token_per_dp_rank_is_only_balanced_with_offsets() -> None:
    """DP32/EP32 decode, one token per DP rank: the reference loads 8 ranks; offsets spread over all 32."""
    place = make_placement("linear", 256, 32)
    ref, bal = Counter[int](), Counter[int]()
    for dp_rank in range(32):
        like = torch.zeros(1, 8, dtype=torch.int64)
        ref.update(owner_ranks(reference_topk_ids(like, 32, 256), place).flatten().tolist())
        bal.update(
            owner_ranks(balanced_topk_ids(like, 32, 256, offset=dp_rank * 8), place).flatten().tolist()
        )
    assert [ref[r] for r in range(32)] == [32] * 8 + [0] * 24
    assert [bal[r] for r in range(32)] == [8] * 32


def test_transform_dispatch_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown EPLB transform 'random'"):
        transform_topk_ids("random", torch.zeros(1, 1), 1, 1)


def test_balanced_rejects_more_ranks_than_experts() -> None:
    with pytest.raises(ValueError, match=r"num_experts \(4\) < ranks \(8\)"):
        balanced_topk_ids(torch.zeros(1, 2), 8, 4)


def test_owner_ranks_rejects_out_of_range_ids() -> None:
    with pytest.raises(IndexError, match=r"\[0, 16\)"):
        owner_ranks(torch.tensor([[3, 16]]), make_placement("linear", 16, 4))


def test_load_stats_reports_max_over_mean() -> None:
    stats = load_stats([4, 2, 0, 2])
    assert (stats.max, stats.min, stats.mean, stats.max_over_mean, stats.spread) == (4, 0, 2.0, 2.0, 4)
    assert load_stats([0, 0]).max_over_mean == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_transforms_run_on_gpu_without_host_sync() -> None:
    x = torch.zeros(64, 8, dtype=torch.int32, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        ref = reference_topk_ids(x, 8, 256)
        bal = balanced_topk_ids(x, 8, 256)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(ref.cpu(), reference_topk_ids(x.cpu(), 8, 256))
    assert torch.equal(bal.cpu(), balanced_topk_ids(x.cpu(), 8, 256))
