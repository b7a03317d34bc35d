"""LMDeploy's EPLB hook: wrap ``MoEGate.forward`` in ``lmdeploy.pytorch.models.deepseek_v2``.

The seed patch edits two call sites of LMDeploy v0.9.0 (``DeepseekV2MoE.forward`` and
``DeepseekV2DecoderLayer.forward_yield``, the ``--enable-microbatch`` path); both consume the return value of
``MoEGate.forward`` directly, so wrapping that one method is equivalent to patching both (eplb.md 3.3).
The wrapper keeps the router's weights (as the seed does), replaces ``topk_idx`` with the transform, also
overwrites the ``routed_experts`` capture buffer when one is passed (LMDeploy >= 0.16 captures inside the
gate, before the seed's patch point), and records the ids per MoE layer (construction order).

Like the seed it runs after LMDeploy's logical-to-physical EPLB remap (ids are physical; E is
``EPLBManager.num_physical_experts()`` when EPLB is on). R is the EP size (``get_ep_world_rank()``), which
equals the seed's ``torch.distributed.get_world_size()`` in EP mode; placement defaults to LMDeploy's ``ceil``
blocks.

LMDeploy has no plugin entry point: :func:`install_import_hook` (run from the ``sitecustomize`` shim in
``_shim/`` that :func:`launch_env` puts on ``PYTHONPATH``) patches the module the moment any engine process, DP
and Ray workers included, imports it. A wrapped MoE forward that finishes without passing through the wrapped
gate raises, so a future refactor that bypasses ``MoEGate.forward`` cannot silently serve unpatched routing.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from pytest_dsbench.eplb import runtime
from pytest_dsbench.eplb.runtime import EplbConfig, EplbPatchError, RoutingRecorder

log = logging.getLogger("pytest_dsbench.eplb.lmdeploy")

TARGET_MODULE = "lmdeploy.pytorch.models.deepseek_v2"
SHIM_DIR = Path(__file__).resolve().parent / "_shim"
"""The ``sitecustomize`` folder prepended to the engine's ``PYTHONPATH``."""
CHECKED_METHODS = (("DeepseekV2MoE", "forward"), ("DeepseekV2DecoderLayer", "forward_yield"))

_state = threading.local()


def _ep_size() -> int:
    """EP size: ``get_ep_world_rank()`` (>= 0.1x), then the dist context (v0.9), then the torch world."""
    try:
        from lmdeploy.pytorch.distributed import get_ep_world_rank

        return int(get_ep_world_rank()[0])
    except (ImportError, AttributeError, AssertionError):
        pass
    try:
        from lmdeploy.pytorch.distributed import get_dist_manager

        return int(get_dist_manager().current_context().ep)
    except (ImportError, AttributeError, AssertionError):
        pass
    import torch.distributed as dist

    return int(dist.get_world_size()) if dist.is_available() and dist.is_initialized() else 1


def _num_experts(gate: Any, module: ModuleType) -> int:
    """Physical expert count when LMDeploy's EPLB is on, else ``n_routed_experts``."""
    if getattr(gate, "eplb_dispatch_info", None) is not None:
        manager = getattr(module, "EPLBManager", None)
        if manager is not None and hasattr(manager, "num_physical_experts"):
            return int(manager.num_physical_experts())
        eplb = getattr(module, "eplb", None)
        if eplb is not None and hasattr(eplb, "get_global_eplb_metadata"):
            return int(eplb.get_global_eplb_metadata().num_physical_experts())
        raise EplbPatchError("LMDeploy EPLB is on but the physical expert count cannot be found")
    return int(gate.n_routed_experts)


def patch_module(module: ModuleType, config: EplbConfig) -> RoutingRecorder:
    """Wrap ``module.MoEGate`` (forward + __init__) and guard the MoE call sites; idempotent."""
    import torch

    gate_cls = module.MoEGate
    if getattr(gate_cls, "_dsbench_eplb_patched", False):
        return runtime.active_recorder()
    runtime.ensure_ops()
    recorder = RoutingRecorder("lmdeploy", config, config.ranks or _ep_size, config.placement or "ceil")
    runtime.set_active_recorder(recorder)
    orig_init, orig_forward = gate_cls.__init__, gate_cls.forward
    layers = iter(range(1 << 30))

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        orig_init(self, *args, **kwargs)
        self._dsbench_layer = next(layers)

    def forward(self: Any, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        weights, idx = orig_forward(self, hidden_states, *args, **kwargs)
        num_experts = _num_experts(self, module)
        new = idx
        if config.transforms:
            new = torch.ops.dsbench_eplb.route(idx, int(idx.shape[-1]), num_experts, idx.dtype)
            capture = kwargs.get("routed_experts", args[0] if args else None)
            if isinstance(capture, torch.Tensor) and capture.shape == new.shape:
                capture.copy_(new)  # keep --enable-return-routed-experts honest about what ran
        if config.counts_path is not None or config.strict:
            new = torch.ops.dsbench_eplb.observe(new, int(getattr(self, "_dsbench_layer", 0)), num_experts)
        _state.gate_calls = getattr(_state, "gate_calls", 0) + 1
        return weights, new

    gate_cls.__init__ = __init__
    gate_cls.forward = forward
    gate_cls._dsbench_eplb_patched = True
    for cls_name, method in CHECKED_METHODS:
        cls = getattr(module, cls_name, None)
        if cls is not None and hasattr(cls, method):
            setattr(cls, method, _guard(getattr(cls, method), f"{cls_name}.{method}", config))
    log.warning("dsbench EPLB patch active in pid %d: mode=%s ranks=%s counts=%s", os.getpid(), config.mode,
                config.ranks or "EP size", config.counts_path)
    return recorder


def _guard(method: Callable[..., Any], name: str, config: EplbConfig) -> Callable[..., Any]:
    """Raise if a MoE call site finishes without routing through the wrapped gate (generator call sites such
    as a microbatch ``forward_yield`` are checked when they are exhausted)."""

    def check(self: Any, before: int) -> None:
        if config.transforms and getattr(_state, "gate_calls", 0) == before and _routes(self):
            raise EplbPatchError(f"LMDeploy {name} ran without calling the patched MoEGate.forward: the "
                                 f"dsbench {config.mode} routing patch did not take effect")

    if inspect.isgeneratorfunction(method):
        def guarded_gen(self: Any, *args: Any, **kwargs: Any) -> Any:
            before = getattr(_state, "gate_calls", 0)
            result = yield from method(self, *args, **kwargs)
            check(self, before)
            return result

        guarded: Callable[..., Any] = guarded_gen
    else:
        def guarded_fn(self: Any, *args: Any, **kwargs: Any) -> Any:
            before = getattr(_state, "gate_calls", 0)
            result = method(self, *args, **kwargs)
            check(self, before)
            return result

        guarded = guarded_fn
    functools.update_wrapper(guarded, method)
    return guarded


def _routes(module_obj: Any) -> bool:
    """Only MoE blocks route: a decoder layer whose ``mlp`` has no ``gate`` (dense layer) is exempt."""
    if hasattr(module_obj, "gate"):
        return True
    mlp = getattr(module_obj, "mlp", None)
    return mlp is not None and hasattr(mlp, "gate")


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Post-import hook: lets the real loader execute the target module, then patches it."""

    def __init__(self, target: str, config: EplbConfig) -> None:
        self.target = target
        self.config = config

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> Any:
        if fullname != self.target:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        loader = spec.loader
        config = self.config

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec: Any) -> ModuleType | None:
                return loader.create_module(spec)

            def exec_module(self, module: ModuleType) -> None:
                loader.exec_module(module)
                patch_module(module, config)

        spec.loader = _Loader()
        return spec


def install_import_hook(config: EplbConfig | None = None) -> bool:
    """Patch LMDeploy now if already imported, else when it is imported; False when the mode is off."""
    config = config or EplbConfig.from_env()
    if not config.active:
        return False
    if TARGET_MODULE in sys.modules:
        patch_module(sys.modules[TARGET_MODULE], config)
        return True
    for finder in sys.meta_path:
        if isinstance(finder, _PatchOnImport):
            finder.config = config  # a second call (new config) replaces the first one's settings
            return True
    sys.meta_path.insert(0, _PatchOnImport(TARGET_MODULE, config))
    return True


def launch_env(mode: str, base_env: Mapping[str, str]) -> dict[str, str]:
    """What the launcher adds besides ``DSBENCH_EPLB_*``: the ``sitecustomize`` shim ahead of the ``PYTHONPATH``
    the engine would inherit (``base_env``), so every engine process installs the import hook. Runs in the
    suite's process only."""
    existing = base_env.get("PYTHONPATH", "")
    return {"PYTHONPATH": str(SHIM_DIR) + (os.pathsep + existing if existing else "")}
