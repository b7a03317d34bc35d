"""The LMDeploy adapter against a fake ``lmdeploy.pytorch.models.deepseek_v2`` (LMDeploy has no CPU build)
that reproduces both call sites of the seed patch: ``DeepseekV2MoE.forward`` and the microbatch generator
``DeepseekV2DecoderLayer.forward_yield``. The oracle is the same module with the seed's four lines pasted at
both call sites, so the adapter is compared with the seed patch itself, bit for bit."""

# ruff: noqa: E501  (the fake model pastes the seed patch's long lines verbatim)
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pytest_dsbench.engines.lmdeploy import eplb as lmdeploy_eplb
from pytest_dsbench.engines.lmdeploy.eplb import SHIM_DIR
from pytest_dsbench.eplb import runtime
from pytest_dsbench.eplb.counts import check_transform_applied, read_counts
from pytest_dsbench.eplb.runtime import EplbConfig, EplbPatchError
from pytest_dsbench.eplb.transforms import balanced_topk_ids, make_placement

torch = pytest.importorskip("torch")

MODEL = """
    import torch
    import torch.nn.functional as F

    SEED_PATCH = {seed}

    class Config:
        def __init__(self, n_routed_experts=16, num_experts_per_tok=4, n_group=4, topk_group=2):
            self.n_routed_experts = n_routed_experts
            self.num_experts_per_tok = num_experts_per_tok
            self.n_group = n_group
            self.topk_group = topk_group

    class MoEGate(torch.nn.Module):
        def __init__(self, config):
            super().__init__()
            self.top_k = config.num_experts_per_tok
            self.n_routed_experts = config.n_routed_experts
            self.n_group, self.topk_group = config.n_group, config.topk_group
            self.weight = torch.nn.Parameter(torch.randn(config.n_routed_experts, 8))
            self.e_score_correction_bias = torch.nn.Parameter(torch.zeros(config.n_routed_experts))
            self.eplb_dispatch_info = None

        def forward(self, hidden_states, routed_experts=None):
            n = hidden_states.shape[0]
            scores = F.linear(hidden_states.float(), self.weight).sigmoid()
            choice = scores + self.e_score_correction_bias[None]
            group_scores = choice.view(n, self.n_group, self.n_routed_experts // self.n_group).topk(2, dim=-1)[0].sum(-1)
            group_idx = torch.topk(group_scores, k=self.topk_group, dim=-1, sorted=False)[1]
            mask = torch.zeros_like(group_scores).scatter_(1, group_idx, 1)
            mask = mask.unsqueeze(-1).expand(n, self.n_group, self.n_routed_experts // self.n_group).reshape(n, self.n_routed_experts)
            _, topk_idx = torch.topk(choice.masked_fill(~mask.bool(), 0.0), k=self.top_k, dim=-1, sorted=False)
            topk_weight = scores.gather(1, topk_idx)
            if routed_experts is not None:
                routed_experts.copy_(topk_idx)
            return topk_weight, topk_idx

    class FusedMoE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.seen = []
        def forward(self, hidden_states, topk_weights, topk_ids):
            self.seen.append(topk_ids.clone())
            return hidden_states

    class DeepseekV2MoE(torch.nn.Module):
        def __init__(self, config):
            super().__init__()
            self.num_experts = config.n_routed_experts
            self.gate = MoEGate(config)
            self.experts = FusedMoE()

        def forward(self, hidden_states):
            batch_size, sequence_length, hidden_dim = hidden_states.shape
            hidden_states = hidden_states.view(-1, hidden_dim)
            topk_weights, topk_ids = self.gate(hidden_states)
            if SEED_PATCH:
                ranks = torch.distributed.get_world_size()
                shape = topk_ids.shape
                topk_ids = (torch.arange(0, topk_ids.numel(), dtype=torch.int32, device=topk_ids.device) % ranks) * self.num_experts / ranks
                topk_ids = topk_ids.reshape(shape).to(dtype=torch.int64)
            out = self.experts(hidden_states, topk_weights, topk_ids)
            return out.reshape(batch_size, sequence_length, -1)

    class DeepseekV2DecoderLayer(torch.nn.Module):
        def __init__(self, config, dense=False):
            super().__init__()
            self.mlp = torch.nn.Identity() if dense else DeepseekV2MoE(config)

        def forward_yield(self, hidden_states):
            batch_size, sequence_length, hidden_dim = hidden_states.shape
            yield
            hidden_states = hidden_states.view(-1, hidden_dim)
            topk_weights, topk_idx = self.mlp.gate(hidden_states)
            if SEED_PATCH:
                ranks = torch.distributed.get_world_size()
                shape = topk_idx.shape
                topk_idx = (torch.arange(0, topk_idx.numel(), dtype=torch.int32, device=topk_idx.device) % ranks) * self.mlp.num_experts / ranks
                topk_idx = topk_idx.reshape(shape).to(dtype=torch.int64)
            topk_weights = topk_weights.to(torch.float32)
            topk_idx = topk_idx.to(torch.int64)
            yield
            return self.mlp.experts(hidden_states, topk_weights, topk_idx)
"""

DIST = "def get_ep_world_rank():\n    import os\n    return int(os.environ.get('FAKE_EP', '1')), 0\n"


def write_fake(root: Path, seed: bool) -> None:
    files = {
        "lmdeploy/__init__.py": "",
        "lmdeploy/pytorch/__init__.py": "",
        "lmdeploy/pytorch/distributed.py": DIST,
        "lmdeploy/pytorch/models/__init__.py": "",
        "lmdeploy/pytorch/models/deepseek_v2.py": textwrap.dedent(MODEL).format(seed=seed),
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def forget_lmdeploy() -> None:
    for name in [m for m in sys.modules if m == "lmdeploy" or m.startswith("lmdeploy.")]:
        del sys.modules[name]


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.setattr(runtime, "_ACTIVE", runtime._ACTIVE)
    forget_lmdeploy()
    yield
    forget_lmdeploy()


def load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, seed: bool, config: EplbConfig | None
) -> ModuleType:
    """Import a fresh copy of the fake module, through the adapter's import hook when ``config`` is given."""
    root = tmp_path / ("seed" if seed else "adapter")
    write_fake(root, seed)
    forget_lmdeploy()
    monkeypatch.syspath_prepend(str(root))
    if config is not None:
        assert lmdeploy_eplb.install_import_hook(config)
    import lmdeploy.pytorch.models.deepseek_v2 as module

    return module


def run_both_call_sites(module: ModuleType, tokens: int, experts: int, top_k: int) -> list[torch.Tensor]:
    """The ids that reach the experts at both seed call sites (same weights: same seed)."""
    torch.manual_seed(0)
    config = module.Config(n_routed_experts=experts, num_experts_per_tok=top_k, n_group=4, topk_group=2)
    moe = module.DeepseekV2MoE(config)
    layer = module.DeepseekV2DecoderLayer(config)
    hidden = torch.randn(1, tokens, 8)
    moe(hidden)
    gen = layer.forward_yield(hidden)
    try:
        while True:
            next(gen)
    except StopIteration:
        pass
    return [moe.experts.seen[-1], layer.mlp.experts.seen[-1]]


@given(
    tokens=st.integers(1, 24),
    top_k=st.integers(1, 8),
    experts=st.sampled_from([8, 16, 32, 64]),
    ranks=st.integers(1, 16),
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_adapter_equals_the_seed_patch_at_both_call_sites(
    fresh: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tokens: int,
    top_k: int,
    experts: int,
    ranks: int,
) -> None:
    top_k = min(top_k, experts // 2)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a, **k: ranks)
    oracle = run_both_call_sites(load(tmp_path, monkeypatch, seed=True, config=None), tokens, experts, top_k)
    adapted = run_both_call_sites(
        load(tmp_path, monkeypatch, seed=False, config=EplbConfig(mode="reference", ranks=ranks)),
        tokens,
        experts,
        top_k,
    )
    for got, want in zip(adapted, oracle, strict=True):
        assert got.dtype == want.dtype == torch.int64
        assert torch.equal(got, want)


def test_balanced_mode_uses_the_ep_size_and_ceil_placement(
    fresh: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_EP", "3")
    module = load(tmp_path, monkeypatch, seed=False, config=EplbConfig(mode="balanced"))
    ids = run_both_call_sites(module, 5, 16, 4)
    want = balanced_topk_ids(
        torch.zeros(5, 4, dtype=torch.int64), 3, 16, placement=make_placement("ceil", 16, 3)
    )
    assert all(torch.equal(got, want) for got in ids)


@given(
    tokens=st.integers(1, 24),
    top_k=st.integers(1, 8),
    experts=st.sampled_from([8, 16, 32, 64]),
    ranks=st.integers(1, 16),
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_balanced_adapter_equals_the_balanced_transform_at_both_call_sites(
    fresh: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tokens: int,
    top_k: int,
    experts: int,
    ranks: int,
) -> None:
    top_k = min(top_k, experts // 2)
    assume(-(-experts // ranks) * (ranks - 1) < experts)  # LMDeploy's ceil placement leaves no rank empty
    module = load(tmp_path, monkeypatch, seed=False, config=EplbConfig(mode="balanced", ranks=ranks))
    want = balanced_topk_ids(
        torch.zeros(tokens, top_k, dtype=torch.int64), ranks, experts, placement=make_placement("ceil", experts, ranks)
    )
    for got in run_both_call_sites(module, tokens, experts, top_k):
        assert got.dtype == torch.int64 and torch.equal(got, want)


def test_capture_buffer_shows_the_patched_routing(
    fresh: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load(tmp_path, monkeypatch, seed=False, config=EplbConfig(mode="reference", ranks=4))
    gate = module.MoEGate(module.Config())
    capture = torch.full((3, 4), -7, dtype=torch.int64)
    _, ids = gate(torch.randn(3, 8), routed_experts=capture)
    assert torch.equal(capture, ids) and ids[0].tolist() == [0, 4, 8, 12]


def test_counts_are_recorded_per_gate(fresh: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counts = tmp_path / "counts.json"
    module = load(
        tmp_path, monkeypatch, seed=False, config=EplbConfig(mode="reference", ranks=4, counts_path=counts)
    )
    run_both_call_sites(module, 6, 16, 4)
    runtime.active_recorder().flush()
    got = read_counts(counts)
    assert sorted(got.layers) == [0, 1] and got.placement == "ceil" and check_transform_applied(got) == []


def test_a_call_site_that_bypasses_the_gate_fails_loudly(
    fresh: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load(tmp_path, monkeypatch, seed=False, config=EplbConfig(mode="balanced", ranks=2))
    moe = module.DeepseekV2MoE(module.Config())

    class FusedGate(torch.nn.Module):  # a refactor that routes without MoEGate.forward
        def forward(self, hidden_states: torch.Tensor) -> Any:
            n = hidden_states.shape[0]
            return torch.ones(n, 4), torch.zeros(n, 4, dtype=torch.int64)

    moe.gate = FusedGate()
    with pytest.raises(
        EplbPatchError, match=r"DeepseekV2MoE\.forward ran without calling the patched MoEGate"
    ):
        moe(torch.randn(1, 2, 8))
    dense = module.DeepseekV2DecoderLayer(module.Config(), dense=True)
    assert not hasattr(dense.mlp, "gate")


def test_physical_expert_count_is_used_under_lmdeploy_eplb(
    fresh: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load(tmp_path, monkeypatch, seed=False, config=EplbConfig(mode="reference", ranks=4))
    gate = module.MoEGate(module.Config())
    gate.eplb_dispatch_info = object()
    with pytest.raises(EplbPatchError, match="physical expert count cannot be found"):
        gate(torch.randn(2, 8))

    class EPLBManager:
        @staticmethod
        def num_physical_experts() -> int:
            return 20

    module.EPLBManager = EPLBManager  # type: ignore[attr-defined]
    _, ids = gate(torch.randn(2, 8))
    assert ids[0].tolist() == [0, 5, 10, 15]


def test_mode_off_installs_nothing(fresh: None) -> None:
    assert not lmdeploy_eplb.install_import_hook(EplbConfig(mode="off"))


def test_sitecustomize_shim_patches_every_new_process(tmp_path: Path) -> None:
    write_fake(tmp_path / "site", seed=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("import os\nos.environ['CHAINED'] = 'yes'\n")
    package_root = Path(lmdeploy_eplb.__file__).resolve().parents[3]
    env = {
        **os.environ,
        "DSBENCH_EPLB_MODE": "reference",
        "DSBENCH_EPLB_RANKS": "4",
        "PYTHONPATH": os.pathsep.join([str(SHIM_DIR), str(tmp_path / "site"), str(package_root), str(other)]),
    }
    code = (
        "import os, torch, lmdeploy.pytorch.models.deepseek_v2 as m\n"
        "g = m.MoEGate(m.Config())\n"
        "ids = g(torch.randn(1, 8))[1].tolist()\n"
        "print(m.MoEGate._dsbench_eplb_patched, os.environ.get('CHAINED'), ids)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[-2] == "True yes [[0, 4, 8, 12]]"
