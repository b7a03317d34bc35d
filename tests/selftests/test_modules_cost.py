"""The module cost model against numbers computed by hand from DeepSeek-R1's config.json."""

from __future__ import annotations

import pytest

from pytest_dsbench.modules import cost
from pytest_dsbench.modules.config import CI_DIMS, DEEPSEEK_R1, SCALES, SEED_TOKEN_COUNTS, select_scale

R1 = DEEPSEEK_R1


def test_one_routed_expert_is_seed_002s_7168_x_2048_x_3_weights() -> None:
    expert = cost.mlp(R1, 1, R1.moe_intermediate_size)
    assert expert.bytes - 2 * 7168 * 2 == 7168 * 2048 * 3 * 2  # 44M bf16 parameters, plus one token in and out


def test_dense_mlp_flops_and_bytes_by_hand() -> None:
    mlp = cost.mlp(R1, 4, R1.intermediate_size)
    assert mlp.flops == 6 * 4 * 7168 * 18432 == 3_170_893_824
    assert mlp.traffic == {"device": 3 * 7168 * 18432 * 2 + 2 * 4 * 7168 * 2} == {"device": 792_838_144}


def test_fp8_weights_count_one_byte_an_element_and_a_float32_scale_per_128x128_block() -> None:
    assert cost.weight_bytes(256, 384, "fp8") == 256 * 384 + 2 * 3 * 4 == 98_328
    assert cost.weight_bytes(129, 128, "fp8") == 129 * 128 + 2 * 1 * 4  # a partial block has a scale too
    assert cost.weight_bytes(256, 384, "bf16") == 256 * 384 * 2


def test_unknown_weight_dtype_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown weight dtype 'int4'; expected one of bf16, fp8"):
        cost.weight_bytes(1, 1, "int4")


def test_embed_tokens_on_the_cpu_then_copied_splits_host_and_h2d_traffic() -> None:
    both = cost.embed_tokens(R1, 2, "host+h2d")
    assert both.flops == 0
    assert both.traffic == {"host": 2 * 8 + 2 * 2 * 7168 * 2, "h2d": 2 * 7168 * 2}
    assert cost.embed_tokens(R1, 2, "device").traffic == {"device": 57_360}


def test_moe_layer_reads_only_the_experts_that_got_tokens() -> None:
    moe = cost.moe(R1, 1, active_experts=8)
    gate, expert = 2 * 7168 * 256, 6 * 7168 * 2048
    assert moe.flops == gate + 8 * expert + expert == 796_393_472  # gate, top-8 routed, 1 shared
    weights = 256 * 7168 * 2 + 256 * 4 + 9 * 7168 * 2048 * 3 * 2  # gate, bias, 8 routed + 1 shared
    assert moe.bytes == weights + 2 * 7168 * 2 == 796_423_168
    assert cost.moe(R1, 1, 32).bytes - moe.bytes == 24 * 7168 * 2048 * 3 * 2


def test_mla_projections_have_deepseek_v3s_187m_parameters() -> None:
    q_a, q_b = 7168 * 1536, 1536 * 128 * 192
    kv_a, kv_b, o = 7168 * (512 + 64), 512 * 128 * (128 + 128), 128 * 128 * 7168
    assert cost.mla_linear_params(R1) == q_a + q_b + kv_a + kv_b + o == 187_105_280


def test_mla_prefill_counts_causal_query_key_pairs() -> None:
    prefill = cost.mla_prefill(R1, 2)  # 3 causal pairs
    assert prefill.flops == 2 * 2 * 187_105_280 + 2 * 128 * 3 * (192 + 128) == 748_666_880
    assert prefill.bytes == 2 * (187_105_280 + 1536 + 512) + 2 * 2 * 7168 * 2


def test_mla_decode_reads_the_latent_cache_once_with_absorbed_weights() -> None:
    decode = cost.mla_decode(R1, 1, 4096)
    scores, output = 2 * 128 * 4096 * (512 + 64), 2 * 128 * 4096 * 512
    assert decode.flops == 2 * 187_105_280 + scores + output == 1_515_061_248
    cache = 4096 * 576 * 2 + 576 * 2  # read every entry, write the new one
    assert decode.bytes == 2 * (187_105_280 + 1536 + 512) + cache + 2 * 7168 * 2 == 378_963_072


def test_lm_head_writes_bf16_logits() -> None:
    head = cost.lm_head(R1, 1)
    assert head.flops == 2 * 7168 * 129_280
    assert head.bytes == 129_280 * 7168 * 2 + 7168 * 2 + 129_280 * 2 == 1_853_630_976


def test_full_scale_uses_the_seeds_token_counts() -> None:
    assert SCALES["full"].token_counts == SEED_TOKEN_COUNTS == (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
    assert SCALES["full"].dims == R1


def test_ci_dims_keep_the_structure_of_the_real_ones() -> None:
    ci = SCALES["ci"]
    assert CI_DIMS.n_routed_experts % CI_DIMS.n_group == 0
    assert CI_DIMS.topk_group < CI_DIMS.n_group and CI_DIMS.num_experts_per_tok <= CI_DIMS.n_routed_experts
    assert CI_DIMS.n_routed_experts % ci.ep_ranks == 0
    assert CI_DIMS.hidden_size % 128 == 0 and CI_DIMS.moe_intermediate_size % 128 == 0  # FP8 blocks fit
    assert ci.rounds >= 8  # the regression gate's per-run sample minimum


def test_auto_scale_is_full_with_a_cuda_device_and_ci_without() -> None:
    assert select_scale("auto", cuda_available=True)[0].name == "full"
    scale, why = select_scale("auto", cuda_available=False)
    assert scale.name == "ci" and "no CUDA device" in why


def test_an_explicit_scale_wins_over_the_device() -> None:
    assert select_scale("full", cuda_available=False)[0].name == "full"
    assert select_scale("ci", cuda_available=True)[0].name == "ci"
