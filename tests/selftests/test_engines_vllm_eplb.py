"""The vLLM adapter against the installed vLLM's real router code: ``create_fused_moe_router`` (the factory
the DeepSeek MoE layer calls), ``RoutingSimulatorRouter`` and ``FusedMoERouter.select_experts`` (what the
modular MoE runner calls). Every class attribute the adapter patches is restored after each test."""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_dsbench.engines.vllm import eplb as vllm_eplb
from pytest_dsbench.eplb import runtime
from pytest_dsbench.eplb.counts import check_transform_applied, read_counts
from pytest_dsbench.eplb.runtime import EplbConfig, EplbPatchError, RoutingRecorder
from pytest_dsbench.eplb.transforms import transform_topk_ids

torch = pytest.importorskip("torch")
router_pkg = "vllm.model_executor.layers.fused_moe.router"
pytest.importorskip(f"{router_pkg}.routing_simulator_router", reason="needs vLLM's fused_moe/router layout")
dynamo_config = importlib.import_module("torch._dynamo.config")
fm = importlib.import_module(f"{router_pkg}.fused_moe_router")
sm = importlib.import_module(f"{router_pkg}.routing_simulator_router")
factory = importlib.import_module(f"{router_pkg}.router_factory")


def make_router(top_k: int = 4, experts: int = 16) -> Any:
    """What vLLM's DeepSeek MoE layer builds (grouped top-k with a correction bias, as in noaux_tc)."""
    groups = 4 if experts % 4 == 0 else 1
    return factory.create_fused_moe_router(
        top_k=top_k,
        global_num_experts=experts,
        use_grouped_topk=True,
        num_expert_group=groups,
        topk_group=min(2, groups),
        scoring_func="sigmoid",
        e_score_correction_bias=torch.zeros(experts),
    )


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """Call the real entry point ``register()`` with the given mode; undo every patch afterwards."""
    base = fm.FusedMoERouter
    monkeypatch.setattr(base, "__init__", base.__init__)
    monkeypatch.setattr(base, "select_experts", base.select_experts)
    monkeypatch.setattr(base, "_dsbench_eplb_patched", False, raising=False)
    monkeypatch.setattr(
        sm.RoutingSimulator, "_routing_strategies", dict(sm.RoutingSimulator._routing_strategies)
    )
    ignored = dynamo_config.ignore_logging_functions  # a torch config entry: restore in place, never setattr
    saved = set(ignored)
    monkeypatch.setattr(runtime, "_ACTIVE", runtime._ACTIVE)

    def do(mode: str, ranks: int | None = 4, strategy: str | None = "auto") -> Path:
        counts = tmp_path / "counts.json"
        monkeypatch.setenv("DSBENCH_EPLB_MODE", mode)
        monkeypatch.setenv("DSBENCH_EPLB_COUNTS_PATH", str(counts))
        if ranks is not None:
            monkeypatch.setenv("DSBENCH_EPLB_RANKS", str(ranks))
        if strategy == "auto":
            strategy = vllm_eplb.strategy_name(mode) if mode in ("reference", "balanced") else None
        if strategy is None:
            monkeypatch.delenv(vllm_eplb.STRATEGY_ENV, raising=False)
        else:
            monkeypatch.setenv(vllm_eplb.STRATEGY_ENV, strategy)
        vllm_eplb.register()
        return counts

    yield do
    ignored.clear()
    ignored.update(saved)


def test_register_does_nothing_when_mode_is_off(install: Callable[..., Path]) -> None:
    install("off")
    assert not getattr(fm.FusedMoERouter, "_dsbench_eplb_patched", False)
    assert type(make_router()).__name__ == "CPURouter"


@pytest.mark.parametrize("mode", ["reference", "balanced"])
def test_router_ids_equal_the_transform_and_are_counted(install: Callable[..., Path], mode: str) -> None:
    counts_path = install(mode)
    routers = [make_router(), make_router()]
    assert all(isinstance(r, sm.RoutingSimulatorRouter) for r in routers)
    for tokens in (1, 7, 64):
        for router in routers:
            weights, ids = router.select_experts(torch.randn(tokens, 8), torch.randn(tokens, 16))
            want = transform_topk_ids(mode, torch.zeros(tokens, 4), 4, 16)
            assert ids.dtype == torch.int32 and torch.equal(ids, want.to(torch.int32))
            assert weights.shape == (tokens, 4) and bool(torch.isfinite(weights).all())
    runtime.active_recorder().flush()
    got = read_counts(counts_path)
    assert sorted(got.layers) == [0, 1] and check_transform_applied(got) == []
    assert got.layers[0].slots == (1 + 7 + 64) * 4


@given(
    tokens=st.integers(0, 50),
    top_k=st.integers(1, 9),
    experts=st.sampled_from([4, 8, 12, 16, 20, 64]),
    ranks=st.integers(1, 24),
    mode=st.sampled_from(["reference", "balanced"]),
    indices=st.sampled_from([None, torch.int64, torch.int32]),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_adapter_ids_equal_the_claimed_transform(
    install_reference: None,
    tokens: int,
    top_k: int,
    experts: int,
    ranks: int,
    mode: str,
    indices: torch.dtype | None,
) -> None:
    """Bit-for-bit: what vLLM's select_experts returns equals the core transform, cast to vLLM's dtype."""
    top_k = min(top_k, experts)
    ranks = min(ranks, experts) if mode == "balanced" else ranks
    config = EplbConfig(mode=mode, ranks=ranks)
    runtime.set_active_recorder(RoutingRecorder("vllm", config, ranks, "linear"))
    router = make_router(top_k, experts)
    _, ids = router.select_experts(
        torch.randn(tokens, 8), torch.randn(tokens, experts), topk_indices_dtype=indices
    )
    want = transform_topk_ids(mode, torch.zeros(tokens, top_k, dtype=torch.int64), ranks, experts)
    assert ids.dtype == (indices or torch.int32)
    assert torch.equal(ids.to(torch.int64), want.to(torch.int64))


@pytest.fixture
def install_reference(install: Callable[..., Path]) -> None:
    install("reference", strategy="dsbench_eplb_reference")
    # the strategy reads mode/ranks from the active recorder (swapped per example); the wrapper only counts
    for mode in ("reference", "balanced"):
        sm.RoutingSimulator.register_strategy(
            vllm_eplb.strategy_name(mode), vllm_eplb.make_strategy(sm.RoutingStrategy, mode)
        )


def test_observe_mode_counts_the_models_own_routing(install: Callable[..., Path]) -> None:
    logits = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    _, own = make_router().select_experts(torch.zeros(32, 8), logits)
    counts_path = install("observe")
    router = make_router()
    assert type(router).__name__ == "CPURouter"
    _, ids = router.select_experts(torch.zeros(32, 8), logits)
    assert torch.equal(ids, own)
    runtime.active_recorder().flush()
    layer = read_counts(counts_path).layers[0]
    assert (
        layer.expected is None and layer.counts == torch.bincount(own.flatten().long(), minlength=16).tolist()
    )


def test_transform_mode_without_the_strategy_variable_refuses_to_install(
    install: Callable[..., Path],
) -> None:
    with pytest.raises(
        EplbPatchError, match="needs VLLM_MOE_ROUTING_SIMULATION_STRATEGY=dsbench_eplb_reference"
    ):
        install("reference", strategy=None)


def test_a_router_that_ignores_the_strategy_fails_at_model_build(
    install: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release that ignores the env var (vLLM between PRs #21990 and #28002) builds the normal router."""
    install("balanced")
    monkeypatch.delenv(vllm_eplb.STRATEGY_ENV)
    with pytest.raises(EplbPatchError, match="built a CPURouter instead of RoutingSimulatorRouter"):
        make_router()


def test_a_strategy_swapped_after_install_is_caught_by_the_counter(install: Callable[..., Path]) -> None:
    counts_path = install("reference")
    sm.RoutingSimulator.register_strategy(
        "dsbench_eplb_reference", sm.RoutingSimulator._routing_strategies["uniform_random"]
    )
    make_router().select_experts(torch.zeros(16, 8), torch.randn(16, 16))
    runtime.active_recorder().flush()
    problems = check_transform_applied(read_counts(counts_path))
    assert problems and "differ from the reference transform" in problems[0]


def test_version_gate() -> None:
    vllm_eplb.check_version((0, 32))
    with pytest.raises(EplbPatchError, match=r"vLLM 0\.10 is outside the versions"):
        vllm_eplb.check_version((0, 10))


def test_simulator_warning_no_longer_breaks_fullgraph_compile(install: Callable[..., Path]) -> None:
    """vLLM 0.32's simulate_routing logs with warning_once inside the traced forward (CPU: fullgraph)."""
    install("balanced")
    router = make_router()
    fn = torch.compile(lambda h, g: router.select_experts(h, g)[1] + 0, fullgraph=True, backend="eager")
    assert torch.equal(
        fn(torch.zeros(5, 8), torch.randn(5, 16)),
        transform_topk_ids("balanced", torch.zeros(5, 4, dtype=torch.int32), 4, 16),
    )


def test_dp_offset_is_the_prefix_sum_of_earlier_ranks_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import vllm.distributed
    import vllm.forward_context

    meta = SimpleNamespace(num_tokens_across_dp_cpu=torch.tensor([3, 5, 2, 7]))
    monkeypatch.setattr(vllm.forward_context, "is_forward_context_available", lambda: True)
    monkeypatch.setattr(
        vllm.forward_context, "get_forward_context", lambda: SimpleNamespace(dp_metadata=meta)
    )
    monkeypatch.setattr(vllm.distributed, "get_dp_group", lambda: SimpleNamespace(rank_in_group=2))
    assert vllm_eplb.dp_slot_offset(2, 8) == (3 + 5) * 8
    monkeypatch.setattr(
        vllm.forward_context, "get_forward_context", lambda: SimpleNamespace(dp_metadata=None)
    )
    assert vllm_eplb.dp_slot_offset(2, 8) == 0


def test_balanced_mode_uses_the_dp_offset_when_asked(
    install: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "slot_offset_hook", runtime.slot_offset_hook)
    monkeypatch.setenv(vllm_eplb.ENV_DP_OFFSET, "1")
    monkeypatch.setattr(vllm_eplb, "dp_slot_offset", lambda tokens, top_k: 3 * top_k)
    install("balanced")
    assert runtime.slot_offset_hook is not runtime._no_offset
    monkeypatch.setattr(runtime, "slot_offset_hook", lambda tokens, top_k: 3 * top_k)
    _, ids = make_router().select_experts(torch.zeros(2, 8), torch.randn(2, 16))
    want = transform_topk_ids("balanced", torch.zeros(2, 4, dtype=torch.int32), 4, 16, offset=12)
    assert torch.equal(ids, want)
    runtime.active_recorder().flush()


def test_vllm_020_layout_where_a_base_router_defines_select_experts_is_counted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """vLLM 0.20.x: ``BaseRouter(FusedMoERouter)`` defines ``select_experts`` without ``topk_indices_dtype``; a
    wrapper on ``FusedMoERouter`` would never run there (seen on an H100: the patch routed, the counter stayed
    empty)."""
    from types import SimpleNamespace

    class FusedMoERouter:
        def __init__(self, experts: int) -> None:
            self.global_num_experts = experts

        def select_experts(self, hidden_states: Any, router_logits: Any) -> Any:
            raise NotImplementedError

    class BaseRouter(FusedMoERouter):
        def select_experts(self, hidden_states: Any, router_logits: Any) -> Any:
            weights, ids = torch.topk(router_logits, 2, dim=-1)
            return weights, ids.to(torch.int32)

    class RoutingSimulatorRouter(BaseRouter):
        pass

    monkeypatch.setattr(runtime, "_ACTIVE", runtime._ACTIVE)
    router_mod = SimpleNamespace(FusedMoERouter=FusedMoERouter)
    simulator_mod = SimpleNamespace(RoutingSimulatorRouter=RoutingSimulatorRouter)
    counts = tmp_path / "counts.json"
    recorder = vllm_eplb.install(EplbConfig(mode="observe", ranks=2, counts_path=counts), router_mod, simulator_mod)
    router = RoutingSimulatorRouter(8)
    _, ids = router.select_experts(torch.randn(5, 4), torch.randn(5, 8))
    recorder.flush()
    got = read_counts(counts)
    assert got.layers[0].slots == 10 and sum(got.layers[0].counts) == 10 and ids.shape == (5, 2)


def test_a_router_class_with_its_own_select_experts_stops_the_engine_instead_of_going_uncounted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from types import SimpleNamespace

    class FusedMoERouter:
        def __init__(self, experts: int) -> None:
            self.global_num_experts = experts

        def select_experts(self, hidden_states: Any, router_logits: Any) -> Any:
            return torch.topk(router_logits, 2, dim=-1)

    class RoutingSimulatorRouter(FusedMoERouter):
        pass

    class PlatformRouter(FusedMoERouter):  # what observe mode builds: its own select_experts
        def select_experts(self, hidden_states: Any, router_logits: Any) -> Any:
            return torch.topk(router_logits, 2, dim=-1)

    monkeypatch.setattr(runtime, "_ACTIVE", runtime._ACTIVE)
    config = EplbConfig(mode="observe", ranks=2, counts_path=tmp_path / "counts.json")
    vllm_eplb.install(config, SimpleNamespace(FusedMoERouter=FusedMoERouter),
                        SimpleNamespace(RoutingSimulatorRouter=RoutingSimulatorRouter))
    RoutingSimulatorRouter(8)  # inherits the wrapped method: fine
    with pytest.raises(EplbPatchError, match=r"PlatformRouter defines its own select_experts.*go uncounted"):
        PlatformRouter(8)
