"""SGLang's EPLB hook: an ``sglang.srt.plugins`` entry point that installs the routing patch, and the switch
the launcher sets to turn it on (:func:`launch_env`).

SGLang loads general plugins (entry-point group ``sglang.srt.plugins``, filtered by ``SGLANG_PLUGINS``) early
in every scheduler process and applies the hooks they register with ``HookRegistry`` before the model is built
(eplb.md 2.4). ``register()`` registers:

* an AROUND hook on ``sglang.srt.layers.moe.topk.select_experts`` (the function every STANDARD-format TopK
  path calls, ``BypassedTopKOutput.to_standard`` included). It runs the real routing, then replaces the
  *routed* columns of ``topk_ids`` with the transform (fused shared-expert columns untouched, rows at or
  beyond ``num_token_non_padded`` keep the engine's padding value), keeps the router's weights (as the seed
  does) and records the ids per ``layer_id``. It runs after SGLang's logical-to-physical remap, like the
  seed patch in LMDeploy; run balance checks with EPLB off (trivial placement) so physical == logical.
* AFTER hooks on ``TopK.forward_*``: a TopK output that is not STANDARD (``BYPASSED`` for flashinfer_trtllm,
  ``TRITON_KERNEL``) routes inside the kernel and would silently ignore the patch, so it raises; so does a
  STANDARD output our select_experts hook did not touch.

SGLang's plugin loader catches ``Exception`` from ``register()`` and from ``apply_hooks()``, which would turn
a failed installation into silently unpatched routing; setup errors are therefore raised as ``SystemExit``,
which ends the scheduler process and the server start.

Modes: ``reference`` / ``balanced`` / ``observe`` (count only). The built-in alternative, SGLang >= 0.5.2x's
``SGLANG_SIMULATE_ROUND_ROBIN_EXPERTS=1``, equals ``balanced`` plus a per-layer ``deal_offset``.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from pytest_dsbench.eplb import runtime
from pytest_dsbench.eplb.runtime import EplbConfig, EplbPatchError, RoutingRecorder

log = logging.getLogger("pytest_dsbench.eplb.sglang")

TOPK_MODULE = "sglang.srt.layers.moe.topk"
SELECT_TARGET = f"{TOPK_MODULE}.select_experts"
TOPK_FORWARDS = ("forward_cuda", "forward_native", "forward_cpu", "forward_npu", "forward_hip", "forward_xpu")

_touched = threading.local()


def _ep_size() -> int:
    """SGLang's MoE EP size (``moe_ep_size``), not the torch world (TP x PP)."""
    try:
        from sglang.srt.distributed import get_moe_expert_parallel_world_size

        return int(get_moe_expert_parallel_world_size())
    except (ImportError, AssertionError, AttributeError):
        return 1


def _num_physical_experts(router_logits: Any, dispatch_info: Any) -> int:
    for name in ("num_physical_experts", "num_physical_expert"):
        value = getattr(dispatch_info, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return int(router_logits.shape[-1])


def patch_output(out: Any, topk_config: Any, router_logits: Any, layer_id: int | None,
                 num_token_non_padded: Any, dispatch_info: Any, config: EplbConfig) -> Any:
    """Return ``out`` (a StandardTopKOutput) with routed columns replaced by the transform, and record them.

    Pure tensor code plus the ``dsbench_eplb`` ops, so it is safe under SGLang's torch.compile / CUDA graphs.
    """
    import torch

    ids = out.topk_ids
    shared = int(getattr(topk_config, "num_fused_shared_experts", 0) or 0)
    routed = ids[:, : ids.shape[1] - shared] if shared else ids
    num_experts = _num_physical_experts(router_logits, dispatch_info)
    if config.transforms:
        new = torch.ops.dsbench_eplb.route(routed, int(routed.shape[1]), num_experts, routed.dtype)
        if num_token_non_padded is not None:
            rows = torch.arange(routed.shape[0], device=routed.device).unsqueeze(1)
            new = torch.where(rows >= num_token_non_padded, routed, new)
    else:
        new = routed
    if config.counts_path is not None or config.strict:
        new = torch.ops.dsbench_eplb.observe(new, -1 if layer_id is None else int(layer_id), num_experts)
    if new is routed:
        return out
    full = torch.cat([new, ids[:, ids.shape[1] - shared:]], dim=1) if shared else new
    return out._replace(topk_ids=full)


def make_select_hook(config: EplbConfig) -> Callable[..., Any]:
    """The AROUND hook for ``select_experts`` (signature-agnostic: arguments are bound by name)."""
    cache: dict[Any, inspect.Signature] = {}

    def around(original: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        sig = cache.get(original) or cache.setdefault(original, inspect.signature(original))
        bound = sig.bind_partial(*args, **kwargs).arguments
        if not hasattr(out, "topk_ids") or not hasattr(out, "_replace"):
            raise EplbPatchError(f"sglang select_experts returned {type(out).__name__}, not a "
                                 "StandardTopKOutput: this SGLang version is not supported by the dsbench "
                                 "EPLB adapter")
        patched = patch_output(out, bound.get("topk_config"), bound["router_logits"], bound.get("layer_id"),
                               bound.get("num_token_non_padded"), bound.get("expert_location_dispatch_info"),
                               config)
        _touched.value = True
        return patched

    return around


def make_topk_check(config: EplbConfig) -> Callable[..., Any]:
    """AFTER hook for ``TopK.forward_*``: refuse outputs the routing patch cannot reach."""

    def after(result: Any, *args: Any, **kwargs: Any) -> None:
        touched = getattr(_touched, "value", False)
        _touched.value = False
        if not hasattr(result, "topk_ids"):
            fmt = getattr(result, "format", None)
            fmt = getattr(fmt, "name", None) or type(result).__name__
            raise EplbPatchError(f"SGLang TopK produced a {fmt} output: the MoE backend routes inside its "
                                 f"kernel and the dsbench {config.mode} patch would not take effect; pick a "
                                 "--moe-runner-backend that materialises topk_ids (STANDARD format)")
        if not touched:
            raise EplbPatchError("SGLang TopK returned ids without passing through the patched "
                                 "select_experts: the dsbench EPLB hook was not applied")
        return None

    return after


def install(config: EplbConfig, hook_registry: Any, hook_type: Any,
            topk_cls: Any | None = None) -> RoutingRecorder:
    """Register the hooks with SGLang's ``HookRegistry`` (passed in so self-tests can use a fake)."""
    runtime.ensure_ops()
    recorder = RoutingRecorder("sglang", config, config.ranks or _ep_size, config.placement or "linear")
    runtime.set_active_recorder(recorder)
    hook_registry.register(SELECT_TARGET, make_select_hook(config), hook_type.AROUND)
    forwards = [name for name in TOPK_FORWARDS if topk_cls is None or hasattr(topk_cls, name)]
    for name in forwards:
        hook_registry.register(f"{TOPK_MODULE}.TopK.{name}", make_topk_check(config), hook_type.AFTER)
    log.warning("dsbench EPLB hooks registered in pid %d: mode=%s ranks=%s counts=%s", os.getpid(),
                config.mode, config.ranks or "moe_ep_size", config.counts_path)
    return recorder


def register() -> None:
    """The ``sglang.srt.plugins`` entry point: no-op unless ``DSBENCH_EPLB_MODE`` is set."""
    try:
        config = EplbConfig.from_env()
        if not config.active:
            return
        try:
            from sglang.srt.plugins.hook_registry import HookRegistry, HookType
        except ImportError as exc:
            raise EplbPatchError("this SGLang has no plugin HookRegistry (sglang.srt.plugins.hook_registry); "
                                 "the dsbench EPLB adapter needs it") from exc
        topk_cls = None
        try:
            import importlib

            topk_cls = importlib.import_module(TOPK_MODULE).TopK
        except (ImportError, AttributeError) as exc:
            raise EplbPatchError(f"cannot import {TOPK_MODULE}.TopK: {exc}") from exc
        install(config, HookRegistry, HookType, topk_cls)
    except EplbPatchError as exc:  # SGLang swallows Exception from plugins: stop the process instead
        raise SystemExit(f"dsbench EPLB patch for SGLang could not be installed: {exc}") from exc


def load_recorder_dump(path: str) -> dict[str, Any]:
    """Per-rank/per-expert load from an SGLang expert-distribution-recorder ``stat`` dump (``logical_count``
    ``[steps, layers, E]``), for throughput reports: ``{"per_expert": LoadStats-dict, "layers": ...}``."""
    import torch

    from pytest_dsbench.eplb.transforms import load_stats

    data = torch.load(path, map_location="cpu", weights_only=False)
    counts = data["logical_count"]
    if counts.dim() == 3:
        counts = counts.sum(dim=0)
    layers = {str(i): load_stats([int(c) for c in row.tolist()]).as_dict() for i, row in enumerate(counts)}
    total = counts.sum(dim=0)
    return {"per_expert": load_stats([int(c) for c in total.tolist()]).as_dict(), "layers": layers}


def launch_env(mode: str, base_env: Mapping[str, str]) -> dict[str, str]:
    """What the launcher adds besides ``DSBENCH_EPLB_*``: this plugin in ``SGLANG_PLUGINS`` when the user set that
    allowlist (SGLang loads every plugin otherwise). Runs in the suite's process only."""
    from pytest_dsbench.eplb.launch import PLUGIN_NAME, extend_list_var

    return extend_list_var(base_env, "SGLANG_PLUGINS", PLUGIN_NAME)
