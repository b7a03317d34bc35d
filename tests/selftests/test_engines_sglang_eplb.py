"""The SGLang adapter against a fake ``sglang`` package (SGLang cannot be installed next to vLLM's CPU build)
that reproduces the real code paths the adapter touches (sglang 0.5.2x, eplb.md 2.1/2.4): the plugin
``HookRegistry`` (AROUND/AFTER wrappers applied by ``apply_hooks``, swallowing exceptions like the real one),
``topk.select_experts`` returning a ``StandardTopKOutput`` with int32 ids, a fused shared-expert column and
padding rows set to -1, and ``TopK.forward_cuda`` choosing STANDARD or BYPASSED output."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_dsbench.engines.sglang import eplb as sglang_eplb
from pytest_dsbench.eplb import runtime
from pytest_dsbench.eplb.counts import check_transform_applied, read_counts
from pytest_dsbench.eplb.runtime import EplbConfig, EplbPatchError, RoutingRecorder
from pytest_dsbench.eplb.transforms import transform_topk_ids

torch = pytest.importorskip("torch")

FAKE_FILES = {
    "sglang/__init__.py": "",
    "sglang/srt/__init__.py": "",
    "sglang/srt/distributed/__init__.py": "def get_moe_expert_parallel_world_size():\n    return 1\n",
    "sglang/srt/plugins/__init__.py": "",
    "sglang/srt/plugins/hook_registry.py": """
        import functools, logging, pkgutil, sys, types
        from collections import defaultdict
        from enum import Enum
        logger = logging.getLogger(__name__)

        class HookType(Enum):
            BEFORE = "before"; AFTER = "after"; AROUND = "around"; REPLACE = "replace"

        class HookRegistry:
            _hooks = defaultdict(list)
            _patched = set()

            @classmethod
            def register(cls, target, hook, hook_type=HookType.AFTER, *, source=None):
                cls._hooks[target].append((hook_type, hook, source))

            @classmethod
            def apply_hooks(cls):
                for target, hooks in sorted(cls._hooks.items()):
                    if target in cls._patched:
                        continue
                    try:
                        obj_path, attr = target.rsplit(".", 1)
                        obj = pkgutil.resolve_name(obj_path)
                        original = wrapped = getattr(obj, attr)
                        for hook_type, hook, _ in sorted(hooks, key=lambda h: h[0] != HookType.REPLACE):
                            wrapped = _wrap_fn(wrapped, hook, hook_type)
                        setattr(obj, attr, wrapped)
                        for mod in list(sys.modules.values()):
                            if isinstance(mod, types.ModuleType) and mod is not obj:
                                for name, value in list(vars(mod).items()):
                                    if value is original:
                                        setattr(mod, name, wrapped)
                        cls._patched.add(target)
                    except Exception:
                        logger.exception("Failed to apply hooks to %s", target)

            @classmethod
            def reset(cls):
                cls._hooks.clear(); cls._patched.clear()

        def _wrap_fn(original_fn, hook, hook_type):
            if hook_type == HookType.AROUND:
                @functools.wraps(original_fn)
                def wrapper(*args, **kwargs):
                    return hook(original_fn, *args, **kwargs)
            elif hook_type == HookType.AFTER:
                @functools.wraps(original_fn)
                def wrapper(*args, **kwargs):
                    result = original_fn(*args, **kwargs)
                    modified = hook(result, *args, **kwargs)
                    return modified if modified is not None else result
            else:
                raise ValueError(hook_type)
            return wrapper
    """,
    "sglang/srt/layers/__init__.py": "",
    "sglang/srt/layers/moe/__init__.py": "",
    "sglang/srt/layers/moe/topk.py": """
        from dataclasses import dataclass
        from enum import IntEnum, auto
        from typing import NamedTuple, Optional
        import torch

        class TopKOutputFormat(IntEnum):
            STANDARD = auto(); TRITON_KERNEL = auto(); BYPASSED = auto()

        @dataclass
        class TopKConfig:
            top_k: int
            use_grouped_topk: bool = False
            topk_group: Optional[int] = None
            num_expert_group: Optional[int] = None
            renormalize: bool = True
            num_fused_shared_experts: int = 0
            correction_bias: Optional[torch.Tensor] = None
            output_format: Optional[TopKOutputFormat] = None

        class StandardTopKOutput(NamedTuple):
            topk_weights: torch.Tensor
            topk_ids: torch.Tensor
            router_logits: torch.Tensor
            @property
            def format(self):
                return TopKOutputFormat.STANDARD

        class BypassedTopKOutput(NamedTuple):
            hidden_states: torch.Tensor
            router_logits: torch.Tensor
            topk_config: TopKConfig
            @property
            def format(self):
                return TopKOutputFormat.BYPASSED

        def select_experts(hidden_states, router_logits, topk_config, *, layer_id=None,
                           num_token_non_padded=None, expert_location_dispatch_info=None):
            shared = topk_config.num_fused_shared_experts
            k = topk_config.top_k - shared
            scores = router_logits.float().sigmoid() + topk_config.correction_bias
            weights, ids = torch.topk(scores, k, dim=-1)
            ids = ids.to(torch.int32)
            if shared:
                n = router_logits.shape[1]
                ids = torch.cat([ids, torch.full((ids.shape[0], shared), n, dtype=torch.int32)], dim=1)
                weights = torch.cat([weights, torch.ones(ids.shape[0], shared)], dim=1)
            if num_token_non_padded is not None:
                ids[num_token_non_padded:] = -1
            return StandardTopKOutput(weights, ids, router_logits)

        class TopK(torch.nn.Module):
            def __init__(self, top_k, *, layer_id=None, num_fused_shared_experts=0, correction_bias=None,
                         output_format=None):
                super().__init__()
                self.layer_id = layer_id
                self.topk_config = TopKConfig(top_k=top_k, num_fused_shared_experts=num_fused_shared_experts,
                                              correction_bias=correction_bias, output_format=output_format)

            def forward_cuda(self, hidden_states, router_logits, *, num_token_non_padded=None,
                             expert_location_dispatch_info=None):
                if self.topk_config.output_format == TopKOutputFormat.BYPASSED:
                    return BypassedTopKOutput(hidden_states, router_logits, self.topk_config)
                return select_experts(hidden_states=hidden_states, layer_id=self.layer_id,
                                      router_logits=router_logits, topk_config=self.topk_config,
                                      num_token_non_padded=num_token_non_padded,
                                      expert_location_dispatch_info=expert_location_dispatch_info)
    """,
}


@pytest.fixture
def fake_sglang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "site"
    for rel, text in FAKE_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(runtime, "_ACTIVE", runtime._ACTIVE)
    yield root
    for name in [m for m in sys.modules if m == "sglang" or m.startswith("sglang.")]:
        del sys.modules[name]


@pytest.fixture
def start(fake_sglang: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Path]:
    """Run the plugin the way SGLang does: load plugins (our register()), then apply_hooks()."""

    def do(mode: str, ranks: int = 4) -> Path:
        counts = tmp_path / "counts.json"
        monkeypatch.setenv("DSBENCH_EPLB_MODE", mode)
        monkeypatch.setenv("DSBENCH_EPLB_RANKS", str(ranks))
        monkeypatch.setenv("DSBENCH_EPLB_COUNTS_PATH", str(counts))
        from sglang.srt.plugins.hook_registry import HookRegistry

        sglang_eplb.register()
        HookRegistry.apply_hooks()
        return counts

    return do


def topk(top_k: int = 4, experts: int = 16, shared: int = 0, layer_id: int = 3, **kw: Any) -> Any:
    from sglang.srt.layers.moe.topk import TopK

    return TopK(
        top_k + shared,
        layer_id=layer_id,
        num_fused_shared_experts=shared,
        correction_bias=torch.zeros(experts),
        **kw,
    )


@pytest.mark.parametrize("mode", ["reference", "balanced"])
def test_routed_columns_equal_the_transform(start: Callable[..., Path], mode: str) -> None:
    counts = start(mode)
    layer = topk(shared=1)
    logits = torch.randn(6, 16)
    out = layer.forward_cuda(torch.zeros(6, 8), logits, num_token_non_padded=torch.tensor(5))
    want = transform_topk_ids(mode, torch.zeros(6, 4, dtype=torch.int32), 4, 16).to(torch.int32)
    assert out.topk_ids.dtype == torch.int32
    assert torch.equal(out.topk_ids[:5, :4], want[:5])
    assert out.topk_ids[5].tolist() == [-1] * 5, "padding rows keep SGLang's mask"
    assert out.topk_ids[:5, 4].tolist() == [16] * 5, "the fused shared-expert column is untouched"
    assert torch.equal(out.topk_weights[:, :4], torch.topk(logits.sigmoid(), 4).values), "router weights kept"
    runtime.active_recorder().flush()
    got = read_counts(counts)
    assert list(got.layers) == [3] and check_transform_applied(got) == []
    assert got.layers[3].slots == 20


@given(
    tokens=st.integers(0, 40),
    top_k=st.integers(1, 8),
    experts=st.sampled_from([8, 16, 24, 64]),
    ranks=st.sampled_from([1, 2, 3, 4, 8]),
    shared=st.sampled_from([0, 1]),
    pad=st.integers(0, 3),
    mode=st.sampled_from(["reference", "balanced"]),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_adapter_ids_equal_the_claimed_transform(
    start: Callable[..., Path],
    tokens: int,
    top_k: int,
    experts: int,
    ranks: int,
    shared: int,
    pad: int,
    mode: str,
) -> None:
    if "sglang" not in sys.modules or not getattr(
        sys.modules["sglang.srt.layers.moe.topk"], "_dsbench", False
    ):
        start("reference")
        sys.modules["sglang.srt.layers.moe.topk"]._dsbench = True  # type: ignore[attr-defined]
    runtime.set_active_recorder(
        RoutingRecorder("sglang", EplbConfig(mode=mode, ranks=ranks), ranks, "linear")
    )
    real = min(pad, tokens)
    out = topk(top_k, experts, shared).forward_cuda(
        torch.zeros(tokens, 8), torch.randn(tokens, experts), num_token_non_padded=torch.tensor(tokens - real)
    )
    want = transform_topk_ids(mode, torch.zeros(tokens, top_k, dtype=torch.int64), ranks, experts)
    live = tokens - real
    assert torch.equal(out.topk_ids[:live, :top_k].to(torch.int64), want[:live])
    assert bool((out.topk_ids[live:] == -1).all())


def test_observe_mode_counts_without_changing_routing(start: Callable[..., Path]) -> None:
    from sglang.srt.layers.moe import topk as topk_mod

    logits = torch.randn(8, 16)
    own = topk_mod.select_experts(torch.zeros(8, 8), logits, topk(layer_id=0).topk_config).topk_ids
    counts = start("observe")
    out = topk(layer_id=0).forward_cuda(torch.zeros(8, 8), logits)
    assert torch.equal(out.topk_ids, own)
    runtime.active_recorder().flush()
    layer = read_counts(counts).layers[0]
    assert layer.expected is None and sum(layer.counts) == 32


def test_bypassed_topk_output_fails_loudly(start: Callable[..., Path]) -> None:
    from sglang.srt.layers.moe.topk import TopKOutputFormat

    start("reference")
    layer = topk(output_format=TopKOutputFormat.BYPASSED)
    with pytest.raises(EplbPatchError, match="TopK produced a BYPASSED output"):
        layer.forward_cuda(torch.zeros(2, 8), torch.randn(2, 16))


def test_select_hook_that_was_not_applied_fails_loudly(
    start: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """apply_hooks() swallows a failure to patch select_experts; the TopK check then refuses the output."""
    from sglang.srt.plugins.hook_registry import HookRegistry

    real_register = HookRegistry.register

    def drop_select(target: str, *args: Any, **kwargs: Any) -> None:
        if not target.endswith(".select_experts"):
            real_register(target, *args, **kwargs)

    monkeypatch.setattr(HookRegistry, "register", drop_select)
    start("balanced")
    with pytest.raises(EplbPatchError, match="without passing through the patched select_experts"):
        topk().forward_cuda(torch.zeros(2, 8), torch.randn(2, 16))


def test_missing_plugin_framework_stops_the_process(
    fake_sglang: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (fake_sglang / "sglang/srt/plugins/hook_registry.py").unlink()
    monkeypatch.setenv("DSBENCH_EPLB_MODE", "reference")
    with pytest.raises(SystemExit, match="no plugin HookRegistry"):
        sglang_eplb.register()


def test_register_is_a_noop_when_mode_is_off(fake_sglang: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSBENCH_EPLB_MODE", raising=False)
    sglang_eplb.register()
    from sglang.srt.plugins.hook_registry import HookRegistry

    assert not HookRegistry._hooks


def test_recorder_dump_load_stats(tmp_path: Path) -> None:
    path = tmp_path / "expert_distribution_recorder_1.pt"
    torch.save({"rank": 0, "logical_count": torch.tensor([[[4, 0, 0, 0], [1, 1, 1, 1]]])}, path)
    summary = sglang_eplb.load_recorder_dump(str(path))
    assert summary["layers"]["0"]["max_over_mean"] == 4.0 and summary["layers"]["1"]["max_over_mean"] == 1.0
