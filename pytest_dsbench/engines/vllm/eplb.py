"""vLLM's EPLB hook: a ``vllm.general_plugins`` entry point that installs the routing patch, and the switch
the launcher sets to turn it on (:func:`launch_env`).

vLLM loads ``vllm.general_plugins`` in every process (API server, engine core, workers) before the model is
built (eplb.md 1.4). ``register()`` reads :class:`~pytest_dsbench.eplb.runtime.EplbConfig` from the
environment and, unless the mode is ``off``:

* ``reference``/``balanced``: registers routing-simulation strategies ``dsbench_eplb_reference`` /
  ``dsbench_eplb_balanced`` with vLLM's public ``RoutingSimulator`` registry. The launcher selects one with
  ``VLLM_MOE_ROUTING_SIMULATION_STRATEGY``; ``create_fused_moe_router`` then builds a
  ``RoutingSimulatorRouter`` for every MoE layer, ahead of the platform router (also on CPU, before
  ``CPURouter``), and forces a modular backend, so ``select_experts`` really produces the ids the experts run.
* every active mode (``observe`` too): wraps ``select_experts`` where the router classes define it
  (``FusedMoERouter`` in 0.32, ``BaseRouter`` in 0.20; the single method the modular MoE runner calls) to
  record the final ids (after EPLB mapping and dtype conversion) per layer, and verifies at construction that
  each router really is the simulator with our strategy.

Version gate: the router layout (``fused_moe/router/``) of vLLM 0.2x-0.3x; run on 0.32.0 (CPU build) and on
0.20.1 (CUDA, one H100: every EPLB check passed, with ``--enforce-eager`` and with CUDA graphs captured: the
capture guard keeps host copies out of captures and the writer polls the device counters, which graph replays
advance without running any Python), and checked against the 0.33.0 sources in eplb.md. Older layouts (static
``FusedMoE.select_experts``, <= ~0.11) raise.
Failures raise :class:`EplbPatchError` inside ``register()``: vLLM does not catch exceptions raised there,
so the engine exits instead of serving unpatched routing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from pytest_dsbench.eplb import runtime
from pytest_dsbench.eplb.runtime import EplbConfig, EplbPatchError, RoutingRecorder

log = logging.getLogger("pytest_dsbench.eplb.vllm")

STRATEGY_ENV = "VLLM_MOE_ROUTING_SIMULATION_STRATEGY"
ENV_DP_OFFSET = "DSBENCH_EPLB_DP_OFFSET"  # "1": balanced mode deals from the DP rank's global slot ordinal
MIN_VERSION = (0, 20)
MAX_VERSION_EXCLUSIVE = (0, 40)
_ROUTER_MOD = "vllm.model_executor.layers.fused_moe.router"


def strategy_name(mode: str) -> str:
    """The lowercase routing-simulation strategy name for a transform mode (vLLM lower-cases the env var)."""
    return f"dsbench_eplb_{mode}"


def _version_tuple() -> tuple[int, ...]:
    import vllm

    raw = getattr(vllm, "__version_tuple__", None)
    if raw is None:
        raw = tuple(int(p) for p in str(getattr(vllm, "__version__", "0.0")).split(".")[:2] if p.isdigit())
    return tuple(int(p) for p in raw[:2] if isinstance(p, int))


def check_version(version: tuple[int, ...]) -> None:
    """Refuse vLLM versions whose routing layout this adapter was not written for."""
    if not (MIN_VERSION <= version[:2] < MAX_VERSION_EXCLUSIVE):
        raise EplbPatchError(
            f"vLLM {'.'.join(map(str, version))} is outside the versions the dsbench EPLB adapter supports "
            f"({'.'.join(map(str, MIN_VERSION))} <= v < {'.'.join(map(str, MAX_VERSION_EXCLUSIVE))}: the "
            "fused_moe/router layout); run with --eplb off or extend pytest_dsbench/engines/vllm/eplb.py")


def _ep_size() -> int:
    """EP group size (not the torch world: vLLM's world is TP x PCP x PP x DP, eplb.md 1.4)."""
    try:
        from vllm.distributed import get_ep_group

        return int(get_ep_group().world_size)
    except (AssertionError, ImportError, AttributeError):  # groups not initialised yet (API server process)
        return 1


def dp_slot_offset(num_tokens: int, top_k: int) -> int:
    """Global ordinal of this DP rank's first routed slot: the token counts of earlier DP ranks (vLLM's
    ``dp_metadata.num_tokens_across_dp_cpu``, padding included) times ``top_k``. Only meaningful with all2all
    dispatch (DeepEP etc.), where each DP rank routes its local tokens; the default allgather_reducescatter
    backend already routes the global buffer, so leave ``DSBENCH_EPLB_DP_OFFSET`` unset there."""
    from vllm.forward_context import get_forward_context, is_forward_context_available

    if not is_forward_context_available():
        return 0
    meta = getattr(get_forward_context(), "dp_metadata", None)
    if meta is None:
        return 0
    from vllm.distributed import get_dp_group

    rank = int(get_dp_group().rank_in_group)
    return int(meta.num_tokens_across_dp_cpu[:rank].sum()) * top_k


def make_strategy(base: type, mode: str) -> Any:
    """A ``RoutingStrategy`` subclass instance whose ``route_tokens`` returns the transform's ids (through
    the opaque ``dsbench_eplb::route`` op) and uniform 1/top_k weights (the strategy never sees the real
    router's weights; ids are what the equivalence is about)."""
    import torch

    class DsbenchEplbStrategy(base):  # type: ignore[misc, valid-type]
        dsbench_mode = mode

        def route_tokens(self, hidden_states: torch.Tensor, router_logits: torch.Tensor, top_k: int,
                         indices_type: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
            num_experts = int(router_logits.shape[-1])
            # vLLM's own routers emit int32 and convert to indices_type later; keep that dtype contract.
            out_dtype = indices_type or torch.int32
            ids = torch.ops.dsbench_eplb.route(hidden_states, top_k, num_experts, out_dtype)
            weights = torch.full((hidden_states.shape[0], top_k), 1.0 / top_k, dtype=torch.float32,
                                 device=hidden_states.device)
            return weights, ids

    return DsbenchEplbStrategy()


def _num_physical_experts(router: Any) -> int:
    state = getattr(router, "eplb_state", None)
    view = getattr(state, "expert_load_view", None) if state is not None else None
    if view is not None:
        return int(view.shape[-1])
    return int(router.global_num_experts)


def install(config: EplbConfig, router_mod: Any, simulator_mod: Any) -> RoutingRecorder:
    """Patch the given vLLM modules (separated from :func:`register` so self-tests can pass fakes).

    ``router_mod`` provides ``FusedMoERouter``; ``simulator_mod`` provides ``RoutingSimulator``,
    ``RoutingStrategy`` and ``RoutingSimulatorRouter``.
    """
    import torch

    runtime.ensure_ops()
    base = router_mod.FusedMoERouter
    if getattr(base, "_dsbench_eplb_patched", False):
        return runtime.active_recorder()
    recorder = RoutingRecorder("vllm", config, config.ranks or _ep_size, config.placement or "linear")
    runtime.set_active_recorder(recorder)
    if config.mode == "balanced" and os.environ.get(ENV_DP_OFFSET) == "1":
        runtime.slot_offset_hook = dp_slot_offset
    if config.transforms:
        name = strategy_name(config.mode)
        selected = os.environ.get(STRATEGY_ENV, "").lower()
        if selected != name:
            raise EplbPatchError(f"{runtime.ENV_MODE}={config.mode} needs {STRATEGY_ENV}={name} in the "
                                 f"engine's environment (got {selected!r}); launch through "
                                 "pytest_dsbench.eplb.launch")
        simulator_mod.RoutingSimulator.register_strategy(name, make_strategy(simulator_mod.RoutingStrategy,
                                                                             config.mode))
        _let_dynamo_skip_simulator_warning(simulator_mod)
    orig_init = base.__init__
    # vLLM 0.20.x defines select_experts on BaseRouter (a FusedMoERouter subclass that every router, the simulator
    # included, derives from); later releases define it on FusedMoERouter. Wrap the class that really defines it.
    owner = next((c for c in simulator_mod.RoutingSimulatorRouter.__mro__
                  if "select_experts" in vars(c) and issubclass(c, base)), base)
    orig_select = owner.select_experts
    counter = iter(range(1 << 30))

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        orig_init(self, *args, **kwargs)
        self._dsbench_layer = next(counter)  # construction order == layer order
        _check_router(self, config, simulator_mod)
        if not getattr(type(self).select_experts, "_dsbench_counting", False):
            # a router class of its own select_experts (observe mode uses the platform's routers) would route
            # past the counter and leave the histograms silently empty
            raise EplbPatchError(f"vLLM's {type(self).__name__} defines its own select_experts, which the dsbench "
                                 f"counter does not wrap (it wraps {owner.__name__}'s): MoE layer "
                                 f"{self._dsbench_layer} would go uncounted")

    def select_experts(self: Any, hidden_states: torch.Tensor, router_logits: torch.Tensor, *args: Any,
                       **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        # Pass-through: 0.20.x has no topk_indices_dtype parameter, later releases do.
        weights, ids = orig_select(self, hidden_states, router_logits, *args, **kwargs)
        if config.counts_path is not None or config.strict:
            ids = torch.ops.dsbench_eplb.observe(ids, int(getattr(self, "_dsbench_layer", 0)),
                                                 _num_physical_experts(self))
        return weights, ids

    select_experts._dsbench_counting = True  # type: ignore[attr-defined]
    base.__init__ = __init__
    owner.select_experts = select_experts
    base._dsbench_eplb_patched = True
    log.warning("dsbench EPLB patch active in pid %d: mode=%s ranks=%s counts=%s", os.getpid(), config.mode,
                config.ranks or "EP size", config.counts_path)
    return recorder


def _let_dynamo_skip_simulator_warning(simulator_mod: Any) -> None:
    """vLLM 0.32's ``RoutingSimulator.simulate_routing`` calls ``logger.warning_once`` inside the traced model
    forward; on the CPU backend (``torch.compile(fullgraph=True)``) Dynamo rejects it ("logging.Logger method
    not supported"), so every simulation strategy, built-in ones included, fails unless ``--enforce-eager``.
    Registering that one bound method in ``torch._dynamo.config.ignore_logging_functions`` (Dynamo's own
    hint) makes it a no-op while tracing; eager mode still logs it."""
    warn = getattr(getattr(simulator_mod, "logger", None), "warning_once", None)
    if warn is None:
        return
    try:
        import torch._dynamo.config as dynamo_config
    except ImportError:
        return
    dynamo_config.ignore_logging_functions.add(warn)


def _check_router(router: Any, config: EplbConfig, simulator_mod: Any) -> None:
    """Fail loudly, at model construction, when a MoE layer's router is not the simulator that calls our
    strategy (e.g. a release that ignores the env var, or a router chosen ahead of the simulator)."""
    if not config.transforms:
        return
    if not isinstance(router, simulator_mod.RoutingSimulatorRouter):
        layer = getattr(router, "_dsbench_layer", "?")
        raise EplbPatchError(f"vLLM built a {type(router).__name__} instead of RoutingSimulatorRouter for "
                             f"MoE layer {layer}: the {config.mode} routing patch would not take effect")


def register() -> None:
    """The ``vllm.general_plugins`` entry point: no-op unless ``DSBENCH_EPLB_MODE`` is set."""
    config = EplbConfig.from_env()
    if not config.active:
        return
    check_version(_version_tuple())
    import importlib

    try:
        router_mod = importlib.import_module(f"{_ROUTER_MOD}.fused_moe_router")
        simulator_mod = importlib.import_module(f"{_ROUTER_MOD}.routing_simulator_router")
    except ImportError as exc:
        raise EplbPatchError(f"vLLM's router layout is missing ({exc}); the dsbench EPLB adapter cannot "
                             "install its routing patch") from exc
    install(config, router_mod, simulator_mod)


def launch_env(mode: str, base_env: Mapping[str, str]) -> dict[str, str]:
    """What the launcher adds for ``mode`` besides ``DSBENCH_EPLB_*``: the routing-simulation strategy of a
    transform mode, and this plugin in ``VLLM_PLUGINS`` when the user set that allowlist (runs in the suite's
    process only; the engine processes never call it)."""
    from pytest_dsbench.eplb.launch import PLUGIN_NAME, extend_list_var

    env = {STRATEGY_ENV: strategy_name(mode)} if mode in ("reference", "balanced") else {}
    return env | extend_list_var(base_env, "VLLM_PLUGINS", PLUGIN_NAME)
