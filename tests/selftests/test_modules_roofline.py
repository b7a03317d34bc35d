"""The roofline fraction: measured time against max(FLOPs / peak FLOP/s, bytes / peak bandwidth)."""

from __future__ import annotations

import pytest

from pytest_dsbench.modules.cost import ModuleCost
from pytest_dsbench.modules.roofline import DevicePeaks, measure_peaks, place

PEAKS = DevicePeaks("test", flop_s={"bf16": 1e15}, bandwidth_b_s={"device": 1e12, "host": 1e11, "h2d": 5e10})


def test_a_memory_bound_call_at_twice_the_roofline_time_is_at_half_the_peak() -> None:
    roof = place(ModuleCost(10**9, {"device": 10**9}), 2e-3, PEAKS)  # ideal: 1 ms of memory, 1 us of compute
    assert (roof.bound, roof.fraction) == ("memory", pytest.approx(0.5))
    assert roof.bandwidth_gb_s == pytest.approx(500.0)
    assert roof.tflop_s == pytest.approx(0.5)


def test_a_compute_bound_call_is_judged_against_the_flop_peak() -> None:
    roof = place(ModuleCost(10**12, {"device": 10**6}), 4e-3, PEAKS)  # ideal: 1 ms of compute
    assert (roof.bound, roof.fraction) == ("compute", pytest.approx(0.25))


def test_memory_paths_add_up_host_gather_then_copy() -> None:
    roof = place(ModuleCost(0, {"host": 10**8, "h2d": 5 * 10**7}), 4e-3, PEAKS)  # 1 ms + 1 ms
    assert roof.roofline_time_s == pytest.approx(2e-3)
    assert roof.fraction == pytest.approx(0.5)


def test_fp8_is_judged_against_the_fp8_peak_when_one_was_measured() -> None:
    both = DevicePeaks("test", flop_s={"bf16": 1e15, "fp8": 2e15}, bandwidth_b_s={"device": 1e12})
    work = ModuleCost(2 * 10**12, {"device": 1})
    assert place(work, 2e-3, both, "fp8").fraction == pytest.approx(0.5)
    assert place(work, 2e-3, PEAKS, "fp8").fraction == pytest.approx(1.0)  # no fp8 peak: bf16's


def test_traffic_over_an_unmeasured_path_is_refused_naming_the_measured_ones() -> None:
    cpu_only = DevicePeaks("cpu", flop_s={"bf16": 1e12}, bandwidth_b_s={"device": 1e10, "host": 1e10})
    with pytest.raises(ValueError, match="no measured bandwidth peak for h2d \\(have device, host\\)"):
        place(ModuleCost(0, {"host": 1, "h2d": 1}), 1e-3, cpu_only)


def test_a_non_positive_time_is_an_error() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        place(ModuleCost(1, {"device": 1}), 0.0, PEAKS)


def test_peaks_are_measured_on_the_cpu_for_every_path_the_cpu_modules_use() -> None:
    torch = pytest.importorskip("torch")
    peaks = measure_peaks(torch.device("cpu"), gemm_n=64, copy_bytes=1 << 20)
    assert set(peaks.flop_s) == {"bf16"} and set(peaks.bandwidth_b_s) == {"device", "host"}
    assert all(v > 0 for v in (*peaks.flop_s.values(), *peaks.bandwidth_b_s.values()))
    assert peaks.device == "cpu" and any("GEMM 64x64x64" in note for note in peaks.notes)
    assert peaks.bandwidth_b_s["device"] == peaks.bandwidth_b_s["host"]  # the CPU's memory is both


def test_a_bandwidth_peak_is_the_best_of_its_copy_patterns_and_says_which() -> None:
    """A single large copy was no ceiling for a gather into a cache-resident output (nor a large pageable
    host-to-device copy for small ones): every pattern tried is in the notes, the best is the peak."""
    torch = pytest.importorskip("torch")
    peaks = measure_peaks(torch.device("cpu"), gemm_n=64, copy_bytes=4 << 20)
    assert peaks.methods["host"] in ("copy of 4 MiB", "copy of 4 MiB through a 0.015625 MiB buffer")
    note = next(n for n in peaks.notes if n.startswith("copies (read + write"))
    assert "copy of 4 MiB through a" in note and note.endswith(f"the peak is the best, {peaks.methods['host']}")


def test_block_fp8_quantisation_has_one_scale_per_128x128_block_and_round_trips() -> None:
    torch = pytest.importorskip("torch")
    from pytest_dsbench.modules.fp8 import FP8_MAX, block_quantize

    weight = torch.randn(256, 384, dtype=torch.bfloat16)
    weight[0, 0] = 50.0  # one block with a large value gets its own scale
    quant, scale = block_quantize(weight)
    assert quant.dtype == torch.float8_e4m3fn and quant.shape == (256, 384) and scale.shape == (2, 3)
    assert scale[0, 0].item() == pytest.approx(50.0 / FP8_MAX)
    restored = quant.float().reshape(2, 128, 3, 128) * scale[:, None, :, None]
    assert torch.allclose(restored.reshape(256, 384), weight.float(), rtol=0.07, atol=1e-2)


def test_plain_torch_modules_match_their_definitions_on_small_inputs() -> None:
    """The benchmarks time real computations: the MoE gate picks top-k inside the best groups and the absorbed
    MLA decode equals attention with the expanded keys and values."""
    torch = pytest.importorskip("torch")
    from pytest_dsbench.modules.config import CI_DIMS
    from pytest_dsbench.modules.impl import Mla, grouped_topk

    d = CI_DIMS
    logits = torch.randn(8, d.n_routed_experts)
    ids, weights = grouped_topk(logits, torch.zeros(d.n_routed_experts), d)
    per_group = d.n_routed_experts // d.n_group
    assert all(len({int(e) // per_group for e in row}) <= d.topk_group for row in ids)
    assert torch.allclose(weights.sum(-1), torch.full((8,), d.routed_scaling_factor))
    mla = Mla(d, torch.device("cpu"))
    x = torch.randn(3, d.hidden_size, dtype=torch.bfloat16)
    prefill = mla.prefill(x, torch.arange(3))
    cache_kv = torch.zeros(1, 3, d.kv_lora_rank, dtype=torch.bfloat16)
    cache_pe = torch.zeros(1, 3, d.qk_rope_head_dim, dtype=torch.bfloat16)
    cache_kv[0], cache_pe[0] = mla._latent(x, torch.arange(3))
    decoded = mla.decode(x[2:3], cache_kv, cache_pe)  # the last token over the first three: prefill's last row
    assert torch.allclose(decoded.float(), prefill[2:3].float(), rtol=0.05, atol=0.05)


def test_embed_tokens_gathers_rows_untouched_for_a_whole_pass_over_the_vocabulary() -> None:
    """Repeating the same ids kept the rows in cache and put the CPU gather at 4.7x the host peak: every call
    takes the next batch of a seeded permutation of the vocabulary instead."""
    torch = pytest.importorskip("torch")
    from pytest_dsbench.modules.config import CI_DIMS
    from pytest_dsbench.modules.impl import EmbedTokens, id_batches

    cpu = torch.device("cpu")
    batches = id_batches(100, 8, cpu)
    assert len(batches) == 12 and torch.cat(batches).unique().numel() == 96  # no row twice in a pass
    assert all(torch.equal(a, b) for a, b in zip(batches, id_batches(100, 8, cpu), strict=True))  # seeded
    assert sorted(torch.cat(id_batches(4, 10, cpu)).bincount().tolist()) == [2, 2, 3, 3]  # more tokens than ids
    embed = EmbedTokens(CI_DIMS, cpu, cpu)
    prepared = embed.prepare(4)
    first, second = prepared.run(), prepared.run()
    assert prepared.facts == {"id_batches": CI_DIMS.vocab_size // 4}
    expected = id_batches(CI_DIMS.vocab_size, 4, cpu)
    assert torch.equal(first, embed.weight[expected[0]]) and torch.equal(second, embed.weight[expected[1]])
