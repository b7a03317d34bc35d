"""Engine-side runtime shared by the adapters: configuration from env vars, the routing recorder, torch ops.

Why env vars: the suite launches the engine and every engine process (API server, engine core, workers,
DP ranks) inherits the environment, so one set of variables configures the patch everywhere.

* ``DSBENCH_EPLB_MODE``: ``reference`` | ``balanced`` (replace routing) | ``observe`` (only count the model's
  own routing: the negative control) | ``off``/unset (the adapter does nothing).
* ``DSBENCH_EPLB_RANKS``: EP rank count the transform balances over. Default: the engine's EP group size. A
  single-process engine (EP=1, e.g. the embedded CPU vLLM) sets it to simulate R ranks: ids are computed for R
  ranks and per-rank loads are folded with the placement below; nothing is actually dispatched.
* ``DSBENCH_EPLB_PLACEMENT``: ``linear`` | ``ceil`` | ``round_robin`` (default: the engine's own).
* ``DSBENCH_EPLB_COUNTS_PATH``: where the recorder writes its shards (see :mod:`counts`); unset = no counting.
* ``DSBENCH_EPLB_FLUSH_S`` (default 0.5), ``DSBENCH_EPLB_STRICT=1`` (raise inside the engine on the first slot
  that differs from the transform: costs a host sync per call).

The transform and the recorder run inside torch custom ops (``dsbench_eplb::route`` / ``::observe``) so that
``torch.compile`` (vLLM's CPU backend traces the MoE router with ``fullgraph=True``) treats them as opaque
calls: the eager, bit-exact torch code runs at every forward and Python-side counting is not traced away.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_dsbench.eplb.capture import GUARD
from pytest_dsbench.eplb.counts import CounterWriter
from pytest_dsbench.eplb.transforms import (
    PLACEMENTS,
    TRANSFORM_MODES,
    Placement,
    make_placement,
    transform_topk_ids,
)

if TYPE_CHECKING:
    import torch

ENV_MODE = "DSBENCH_EPLB_MODE"
ENV_RANKS = "DSBENCH_EPLB_RANKS"
ENV_PLACEMENT = "DSBENCH_EPLB_PLACEMENT"
ENV_COUNTS = "DSBENCH_EPLB_COUNTS_PATH"
ENV_FLUSH = "DSBENCH_EPLB_FLUSH_S"
ENV_STRICT = "DSBENCH_EPLB_STRICT"
RUNTIME_MODES = ("off", "observe", *TRANSFORM_MODES)


class EplbPatchError(RuntimeError):
    """The routing patch could not be installed or did not take effect; the engine must not serve."""


@dataclass(frozen=True)
class EplbConfig:
    """The patch configuration one engine process reads from its environment."""

    mode: str = "off"
    ranks: int | None = None
    placement: str | None = None
    counts_path: Path | None = None
    flush_s: float = 0.5
    strict: bool = False

    @property
    def active(self) -> bool:
        """True unless the mode is ``off``."""
        return self.mode != "off"

    @property
    def transforms(self) -> bool:
        """True when the patch replaces routing (``reference`` or ``balanced``)."""
        return self.mode in TRANSFORM_MODES

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EplbConfig:
        """Parse and validate the ``DSBENCH_EPLB_*`` variables; raises EplbPatchError naming the bad one."""
        env = os.environ if env is None else env
        mode = (env.get(ENV_MODE) or "off").strip().lower()
        if mode not in RUNTIME_MODES:
            raise EplbPatchError(f"{ENV_MODE}={mode!r} is not one of {', '.join(RUNTIME_MODES)}")
        ranks: int | None = None
        if env.get(ENV_RANKS):
            try:
                ranks = int(env[ENV_RANKS])
            except ValueError:
                ranks = 0
            if ranks < 1:
                raise EplbPatchError(f"{ENV_RANKS}={env[ENV_RANKS]!r} must be a positive integer")
        placement = env.get(ENV_PLACEMENT) or None
        if placement is not None and placement not in PLACEMENTS:
            raise EplbPatchError(f"{ENV_PLACEMENT}={placement!r} is not one of {', '.join(PLACEMENTS)}")
        counts = env.get(ENV_COUNTS) or None
        try:
            flush_s = float(env.get(ENV_FLUSH) or 0.5)
        except ValueError as exc:
            raise EplbPatchError(f"{ENV_FLUSH}={env.get(ENV_FLUSH)!r} is not a number of seconds") from exc
        return cls(mode=mode, ranks=ranks, placement=placement, counts_path=Path(counts) if counts else None,
                   flush_s=flush_s, strict=(env.get(ENV_STRICT) or "") in ("1", "true", "yes"))


@dataclass
class _LayerState:
    num_experts: int
    top_k: int
    counts: torch.Tensor
    expected: torch.Tensor | None
    mismatched: torch.Tensor | None
    slots: torch.Tensor
    calls: torch.Tensor  # device-side, so CUDA-graph replays (which skip this Python) still count
    max_call_slots: torch.Tensor


class RoutingRecorder:
    """Per-layer histograms of the ids an engine hands to its expert kernels, compared with the transform.

    Counting stays on the ids' device (``index_add_``, no host sync); a :class:`CounterWriter` thread copies
    the tensors to the JSON shard every ``flush_s``.
    """

    def __init__(self, engine: str, config: EplbConfig, ranks: int | Callable[[], int],
                 placement: str) -> None:
        self.engine = engine
        self.config = config
        self._ranks = ranks
        self.placement_name = placement
        self._layers: dict[int, _LayerState] = {}
        self._placements: dict[int, Placement] = {}
        self._lock = threading.Lock()
        self._writer: CounterWriter | None = None
        GUARD.install()

    @property
    def ranks(self) -> int:
        """EP ranks simulated; resolved on first use (vLLM's EP group exists only after worker init)."""
        if callable(self._ranks):
            self._ranks = int(self._ranks())
        return self._ranks

    @property
    def writer(self) -> CounterWriter | None:
        """The shard writer (created on first use, after the rank count is known); None without a path."""
        if self._writer is None and self.config.counts_path is not None:
            meta = {"engine": self.engine, "mode": self.config.mode, "ranks": self.ranks,
                    "placement": self.placement_name}
            self._writer = CounterWriter(self.config.counts_path, meta, self.snapshot, self.config.flush_s)
        return self._writer

    def placement(self, num_experts: int) -> Placement | None:
        """The placement the transform deals over (None = closed-form linear blocks, R | E)."""
        if self.placement_name == "linear" and num_experts % self.ranks == 0:
            return None
        if num_experts not in self._placements:
            self._placements[num_experts] = make_placement(self.placement_name, num_experts, self.ranks)
        return self._placements[num_experts]

    def transform(self, like: torch.Tensor, num_experts: int, offset: int = 0) -> torch.Tensor:
        """The configured transform for ids shaped like ``like`` (reference: int64, else like.dtype)."""
        return transform_topk_ids(self.config.mode, like, self.ranks, num_experts, offset=offset,
                                  placement=self.placement(num_experts))

    @staticmethod
    def _zeros(shape: int | tuple[int, ...], device: torch.device) -> torch.Tensor:
        import torch

        return torch.zeros(shape, dtype=torch.int64, device=device)

    def record(self, topk_ids: torch.Tensor, layer: int, num_experts: int, offset: int = 0) -> None:
        """Add one routing call; ids < 0 (masked padding rows) are not counted."""
        import torch

        flat = topk_ids.reshape(-1).to(torch.int64)
        valid = flat >= 0
        with self._lock:
            state = self._layers.get(layer)
            if state is None:
                checks, dev = self.config.transforms, flat.device
                state = _LayerState(num_experts, int(topk_ids.shape[-1]) if topk_ids.dim() else 1,
                                    self._zeros(num_experts, dev),
                                    self._zeros(num_experts, dev) if checks else None,
                                    self._zeros((), dev) if checks else None, self._zeros((), dev),
                                    self._zeros((), dev), self._zeros((), dev))
                self._layers[layer] = state
            state.counts.index_add_(0, flat.clamp(min=0), valid.to(torch.int64))
            state.slots += valid.sum()
            state.calls += 1
            state.max_call_slots.clamp_(min=flat.numel())
            if state.expected is not None and state.mismatched is not None:
                expected = self.transform(topk_ids, num_experts, offset).reshape(-1).to(torch.int64)
                expected = torch.where(valid, expected, torch.full_like(expected, -1))
                state.expected.index_add_(0, expected.clamp(min=0), valid.to(torch.int64))
                bad = (expected != flat).sum()
                state.mismatched += bad
                if self.config.strict and int(bad):
                    raise EplbPatchError(f"{self.engine} layer {layer}: {int(bad)} of {flat.numel()} routed "
                                         f"slots differ from the {self.config.mode} transform: the patch did "
                                         "not take effect")
        writer = self.writer
        if writer is not None:
            writer.ensure_polling()

    def snapshot(self) -> list[dict[str, Any]] | None:
        """JSON-ready per-layer histograms (host copies, taken under the lock); None while a CUDA graph is being
        captured, when a host copy would break the capture (see :mod:`capture`)."""
        with GUARD.outside_capture() as safe, self._lock:
            if not safe:
                return None
            out = []
            for layer in sorted(self._layers):
                st = self._layers[layer]
                expected = None if st.expected is None else [int(c) for c in st.expected.tolist()]
                out.append({"layer": layer, "num_experts": st.num_experts, "top_k": st.top_k,
                            "calls": int(st.calls), "slots": int(st.slots),
                            "max_call_slots": int(st.max_call_slots),
                            "counts": [int(c) for c in st.counts.tolist()], "expected": expected,
                            "mismatched_slots": None if st.mismatched is None else int(st.mismatched)})
            return out

    def flush(self) -> None:
        """Write the shard now (tests, exit)."""
        writer = self.writer if self._layers else None
        if writer is not None:
            writer.flush()


_ACTIVE: RoutingRecorder | None = None


def set_active_recorder(recorder: RoutingRecorder | None) -> None:
    """Install the process-wide recorder the torch ops use (one engine per process)."""
    global _ACTIVE
    _ACTIVE = recorder
    if recorder is not None and recorder.config.counts_path is not None:
        import atexit

        atexit.register(recorder.flush)


def active_recorder() -> RoutingRecorder:
    """The installed recorder; EplbPatchError if the adapter never installed one."""
    if _ACTIVE is None:
        raise EplbPatchError("dsbench EPLB op called but no recorder is installed in this process")
    return _ACTIVE


_OPS_LOCK = threading.Lock()
_OPS_READY = False


def ensure_ops() -> None:
    """Register ``torch.ops.dsbench_eplb.route`` and ``.observe`` once per process.

    ``route(hidden_states, top_k, num_experts, out_dtype)`` returns the configured transform's ids
    ``[tokens, top_k]``; ``observe(topk_ids, layer, num_experts)`` records ids and returns a copy (the copy is
    consumed downstream, so compilers cannot drop the call).
    """
    global _OPS_READY
    with _OPS_LOCK:
        if _OPS_READY:
            return
        import torch

        # Explicit schemas: annotations are strings under `from __future__ import annotations`.
        @torch.library.custom_op("dsbench_eplb::route", mutates_args=(),  # type: ignore[misc]
                                 schema="(Tensor hidden_states, int top_k, int num_experts, "
                                        "ScalarType out_dtype) -> Tensor")
        def _route(hidden_states: torch.Tensor, top_k: int, num_experts: int,
                   out_dtype: torch.dtype) -> torch.Tensor:
            rec = active_recorder()
            like = torch.empty((hidden_states.shape[0], top_k), dtype=out_dtype, device=hidden_states.device)
            return rec.transform(like, num_experts, offset=slot_offset_hook(hidden_states.shape[0], top_k)) \
                .to(out_dtype)

        @_route.register_fake  # type: ignore[misc]
        def _route_fake(hidden_states: torch.Tensor, top_k: int, num_experts: int,
                        out_dtype: torch.dtype) -> torch.Tensor:
            return hidden_states.new_empty((hidden_states.shape[0], top_k), dtype=out_dtype)

        @torch.library.custom_op("dsbench_eplb::observe", mutates_args=(),  # type: ignore[misc]
                                 schema="(Tensor topk_ids, int layer, int num_experts) -> Tensor")
        def _observe(topk_ids: torch.Tensor, layer: int, num_experts: int) -> torch.Tensor:
            active_recorder().record(topk_ids, layer, num_experts,
                                     offset=slot_offset_hook(topk_ids.shape[0], topk_ids.shape[-1]))
            return topk_ids.clone()

        @_observe.register_fake  # type: ignore[misc]
        def _observe_fake(topk_ids: torch.Tensor, layer: int, num_experts: int) -> torch.Tensor:
            return torch.empty_like(topk_ids)

        _OPS_READY = True


def _no_offset(num_tokens: int, top_k: int) -> int:
    return 0


# Adapters with a data-parallel slot offset (global ordinal of this shard's first slot) replace this.
slot_offset_hook = _no_offset
