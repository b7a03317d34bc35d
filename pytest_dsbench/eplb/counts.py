"""The routing-counter file the engine-side EPLB patches write, its reader, and the balance checks.

Why: an engine's own routed-experts output is not always available (vLLM's CPU build cannot start with
``--enable-return-routed-experts``; LMDeploy captures before the patch), so every adapter keeps a
``[layer, expert]`` histogram of the ids the engine actually hands to its expert kernels, plus the histogram
the claimed transform predicts and the number of slots that differ from it. Each engine process writes its
own shard ``<stem>.pid<PID><suffix>`` next to ``DSBENCH_EPLB_COUNTS_PATH`` (atomically, throttled); the reader
sums the shards. Checks return readable problems ("expected ..., got ...") so a failing test says what is off.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_dsbench._atomic import write_json
from pytest_dsbench.eplb.transforms import (
    LoadStats,
    Placement,
    load_stats,
    make_placement,
    rank_counts_from_expert_counts,
)

_log = logging.getLogger(__name__)

FORMAT = "dsbench-eplb-counts"
VERSION = 1


def shard_path(path: Path, pid: int) -> Path:
    """The file one engine process writes: ``counts.json`` -> ``counts.pid1234.json``."""
    return path.with_name(f"{path.stem}.pid{pid}{path.suffix}")


def shard_paths(path: Path) -> list[Path]:
    """Every shard written for ``path`` (sorted)."""
    return sorted(path.parent.glob(f"{path.stem}.pid*{path.suffix}")) if path.parent.is_dir() else []


def clear_counts(path: Path) -> None:
    """Remove stale shards so a new engine run starts from zero."""
    for shard in shard_paths(path):
        shard.unlink(missing_ok=True)


@dataclass
class LayerCounts:
    """One MoE layer's histogram: ``counts`` the engine used, ``expected`` what the transform predicts
    (None in observe mode), ``mismatched_slots`` slots whose id differed from the transform."""

    layer: int
    num_experts: int
    top_k: int
    calls: int = 0
    slots: int = 0
    max_call_slots: int = 0
    counts: list[int] = field(default_factory=list)
    expected: list[int] | None = None
    mismatched_slots: int | None = None

    def merge(self, other: LayerCounts) -> None:
        """Add another process's histogram for the same layer."""
        if other.num_experts != self.num_experts:
            raise ValueError(f"layer {self.layer}: shards disagree on num_experts "
                             f"({self.num_experts} vs {other.num_experts})")
        self.calls += other.calls
        self.slots += other.slots
        self.max_call_slots = max(self.max_call_slots, other.max_call_slots)
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        if self.expected is not None and other.expected is not None:
            self.expected = [a + b for a, b in zip(self.expected, other.expected, strict=True)]
        else:
            self.expected = None
        if self.mismatched_slots is not None and other.mismatched_slots is not None:
            self.mismatched_slots += other.mismatched_slots
        else:
            self.mismatched_slots = None


@dataclass
class CountsReport:
    """All shards of one counter path, merged."""

    engine: str
    mode: str
    ranks: int
    placement: str
    layers: dict[int, LayerCounts]
    shards: list[Path]
    updated_unix: float

    def placement_for(self, layer: LayerCounts) -> Placement:
        """The placement used to fold expert counts into rank counts for ``layer``."""
        return make_placement(self.placement, layer.num_experts, self.ranks)

    @property
    def total_slots(self) -> int:
        """Routed slots over all layers."""
        return sum(layer.slots for layer in self.layers.values())

    def minus(self, before: CountsReport | None) -> CountsReport:
        """What was recorded since ``before`` (e.g. excluding the engine's warm-up/profile forward)."""
        if before is None:
            return self
        layers = {}
        for key, now in self.layers.items():
            old = before.layers.get(key)
            if old is None:
                layers[key] = now
                continue
            layers[key] = LayerCounts(
                layer=key, num_experts=now.num_experts, top_k=now.top_k, calls=now.calls - old.calls,
                slots=now.slots - old.slots, max_call_slots=now.max_call_slots,
                counts=[a - b for a, b in zip(now.counts, old.counts, strict=True)],
                expected=_subtract(now.expected, old.expected),
                mismatched_slots=None if now.mismatched_slots is None or old.mismatched_slots is None
                else now.mismatched_slots - old.mismatched_slots)
        return CountsReport(engine=self.engine, mode=self.mode, ranks=self.ranks, placement=self.placement,
                            layers=layers, shards=list(self.shards), updated_unix=self.updated_unix)


def _subtract(now: list[int] | None, old: list[int] | None) -> list[int] | None:
    return None if now is None or old is None else [a - b for a, b in zip(now, old, strict=True)]


def parse_counts(payload: dict[str, Any], source: str = "<counts>") -> CountsReport:
    """Validate one shard's JSON and turn it into a :class:`CountsReport`."""
    if payload.get("format") != FORMAT or payload.get("version") != VERSION:
        raise ValueError(f"{source}: not a {FORMAT} v{VERSION} file (format={payload.get('format')!r}, "
                         f"version={payload.get('version')!r})")
    layers = {}
    for raw in payload["layers"]:
        layer = LayerCounts(layer=int(raw["layer"]), num_experts=int(raw["num_experts"]),
                            top_k=int(raw["top_k"]), calls=int(raw["calls"]), slots=int(raw["slots"]),
                            max_call_slots=int(raw.get("max_call_slots", 0)),
                            counts=[int(c) for c in raw["counts"]],
                            expected=None if raw.get("expected") is None
                            else [int(c) for c in raw["expected"]],
                            mismatched_slots=None if raw.get("mismatched_slots") is None
                            else int(raw["mismatched_slots"]))
        if len(layer.counts) != layer.num_experts:
            raise ValueError(f"{source}: layer {layer.layer} has {len(layer.counts)} counts for "
                             f"{layer.num_experts} experts")
        layers[layer.layer] = layer
    return CountsReport(engine=str(payload["engine"]), mode=str(payload["mode"]), ranks=int(payload["ranks"]),
                        placement=str(payload["placement"]), layers=layers, shards=[],
                        updated_unix=float(payload.get("updated_unix", 0.0)))


def read_counts(path: Path) -> CountsReport:
    """Read and merge every shard for ``path``; FileNotFoundError names what was expected where."""
    shards = shard_paths(path)
    if not shards:
        raise FileNotFoundError(f"no EPLB routing counter shard {path.stem}.pid*{path.suffix} in "
                                f"{path.parent}: the engine-side patch never recorded a routing call (was it "
                                "installed, and does this MoE backend call the patched router?)")
    merged: CountsReport | None = None
    for shard in shards:
        report = parse_counts(json.loads(shard.read_text(encoding="utf-8")), str(shard))
        if merged is None:
            merged = report
        else:
            if (report.mode, report.ranks, report.placement) != (merged.mode, merged.ranks, merged.placement):
                raise ValueError(f"{shard}: mode/ranks/placement {report.mode}/{report.ranks}/"
                                 f"{report.placement} differ from {merged.mode}/{merged.ranks}/"
                                 f"{merged.placement} of other shards")
            for key, layer in report.layers.items():
                if key in merged.layers:
                    merged.layers[key].merge(layer)
                else:
                    merged.layers[key] = layer
            merged.updated_unix = max(merged.updated_unix, report.updated_unix)
        merged.shards.append(shard)
    assert merged is not None
    return merged


def wait_for_quiet_counts(path: Path, settle_s: float = 1.5, timeout_s: float = 30.0) -> CountsReport:
    """Poll until the merged slot total has not changed for ``settle_s`` (the writer flushes every ~0.5 s)."""
    deadline = time.monotonic() + timeout_s
    last_total, stable_since = -1, time.monotonic()
    while True:
        try:
            report = read_counts(path)
            total = report.total_slots
        except (FileNotFoundError, ValueError, json.JSONDecodeError):
            report, total = None, -1
        now = time.monotonic()
        if total != last_total:
            last_total, stable_since = total, now
        elif report is not None and now - stable_since >= settle_s:
            return report
        if now > deadline:
            return read_counts(path)
        time.sleep(0.25)


# ----------------------------------------------------------------------------------------------- checks

def check_transform_applied(report: CountsReport) -> list[str]:
    """Problems if any layer's engine ids differ from the transform the patch claims (patched modes only)."""
    problems: list[str] = []
    if not report.layers:
        return ["no MoE layer recorded any routing call"]
    for layer in report.layers.values():
        where = f"layer {layer.layer}"
        if layer.slots == 0:
            problems.append(f"{where}: no routed slots recorded")
        if layer.expected is None or layer.mismatched_slots is None:
            problems.append(f"{where}: counter in mode {report.mode!r} has no expected histogram to compare")
            continue
        if layer.mismatched_slots:
            problems.append(f"{where}: {layer.mismatched_slots} of {layer.slots} routed slots differ from "
                            f"the {report.mode} transform (expected 0): the patch did not take effect "
                            "everywhere")
        if layer.counts != layer.expected:
            problems.append(f"{where}: expert histogram {layer.counts} != {report.mode} transform's "
                            f"{layer.expected}")
    return problems


def check_rank_balance(report: CountsReport, max_spread_per_call: int = 1) -> list[str]:
    """Problems if a layer's per-rank load is worse than a rank-first deal allows: every forward call adds at
    most one slot of difference between ranks (eplb.md 4.4 invariant 7), so ``max - min <= calls``; when
    every call's slot count is a multiple of R the bound is exact balance (spread 0)."""
    problems = []
    for layer in report.layers.values():
        ranks = rank_counts_from_expert_counts(layer.counts, report.placement_for(layer))
        stats = load_stats(ranks)
        allowed = max_spread_per_call * layer.calls
        if stats.spread > allowed:
            problems.append(f"layer {layer.layer}: per-rank load {ranks} has max-min {stats.spread} "
                            f"(max/mean {stats.max_over_mean:.3f}); expected max-min <= {allowed} "
                            f"({layer.calls} forward calls x {max_spread_per_call})")
    return problems


def check_expert_pattern(report: CountsReport) -> list[str]:
    """Mode-specific expert usage: ``reference`` touches exactly the R experts floor(r*E/R);
    ``balanced`` touches min(E, largest call) experts, per-expert counts within ``calls`` of each other
    inside every rank."""
    problems = []
    for layer in report.layers.values():
        used = sorted(e for e, c in enumerate(layer.counts) if c)
        if report.mode == "reference":
            want = sorted({(r * layer.num_experts) // report.ranks for r in range(report.ranks)})
            if layer.slots >= report.ranks and used != want:
                problems.append(f"layer {layer.layer}: reference should use exactly experts {want}, "
                                f"used {used}")
        elif report.mode == "balanced":
            want_n = min(layer.num_experts, layer.max_call_slots)
            if len(used) < want_n:
                problems.append(f"layer {layer.layer}: balanced should use {want_n} experts, "
                                f"used {len(used)} ({used})")
    return problems


def check_differs_from_control(patched: CountsReport, control: CountsReport) -> list[str]:
    """Negative control: a patch that silently did nothing yields the model's own histogram. Problems if
    the patched histograms equal the control's, or are not better balanced across ranks."""
    problems = []
    for key, layer in patched.layers.items():
        other = control.layers.get(key)
        if other is None:
            problems.append(f"layer {key}: control run recorded nothing for this layer")
            continue
        if layer.counts == other.counts:
            problems.append(f"layer {key}: patched histogram equals the unpatched control's {other.counts}: "
                            "the routing patch changed nothing")
            continue
        mine = load_stats(rank_counts_from_expert_counts(layer.counts, patched.placement_for(layer)))
        theirs = load_stats(rank_counts_from_expert_counts(other.counts, control.placement_for(other)))
        if mine.max_over_mean > theirs.max_over_mean + 1e-9 and theirs.max_over_mean > 0:
            problems.append(f"layer {key}: patched per-rank max/mean {mine.max_over_mean:.3f} is worse than "
                            f"the unpatched control's {theirs.max_over_mean:.3f}")
    return problems


def assert_no_problems(problems: Sequence[str], what: str) -> None:
    """Raise AssertionError listing every problem (one per line) under a heading."""
    if problems:
        raise AssertionError(f"{what}:\n  " + "\n  ".join(problems))


def load_summary(report: CountsReport) -> dict[str, Any]:
    """Per-layer and overall per-rank / per-expert load (max, mean, max/mean) for throughput reports."""
    layers: dict[str, Any] = {}
    rank_total: list[int] | None = None
    expert_worst: LoadStats | None = None
    for key in sorted(report.layers):
        layer = report.layers[key]
        ranks = rank_counts_from_expert_counts(layer.counts, report.placement_for(layer))
        rank_total = ranks if rank_total is None else [a + b for a, b in zip(rank_total, ranks, strict=True)]
        experts = load_stats(layer.counts)
        if expert_worst is None or experts.max_over_mean > expert_worst.max_over_mean:
            expert_worst = experts
        layers[str(key)] = {"per_rank": load_stats(ranks).as_dict(), "per_expert": experts.as_dict()}
    return {"engine": report.engine, "mode": report.mode, "ranks": report.ranks,
            "placement": report.placement,
            "per_rank": load_stats(rank_total).as_dict() if rank_total else None,
            "per_expert_worst_layer": expert_worst.as_dict() if expert_worst else None, "layers": layers}


# ------------------------------------------------------------------------------------------ the writer

class CounterWriter:
    """Engine-side accumulator + throttled atomic flusher. ``snapshot`` returns the JSON payload; a daemon
    thread takes one every ``flush_s`` and writes it when it changed, and ``flush()`` writes it now (also at
    exit).

    Why poll rather than write after each record: under CUDA graphs the counting ops are replayed on the device
    without the Python ``record`` running at all (on an H100 every load request after start-up was a replay), so
    a "something was recorded" flag would stay unset while the counts grow."""

    def __init__(self, path: Path, meta: dict[str, Any], snapshot: Callable[[], list[dict[str, Any]] | None],
                 flush_s: float = 0.5) -> None:
        self.path = shard_path(path, os.getpid())
        self.meta = dict(meta)
        self._snapshot = snapshot
        self._flush_s = flush_s
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._thread_pid = 0
        self._written: list[dict[str, Any]] | None = None

    def ensure_polling(self) -> None:
        """Called after each eager record; starts the polling thread lazily, and again in a forked child (a
        thread does not survive a fork)."""
        thread = self._thread
        if thread is not None and thread.is_alive() and self._thread_pid == os.getpid():
            return
        with self._lock:
            if self._thread is thread:
                self._thread = threading.Thread(target=self._loop, name="dsbench-eplb-flush", daemon=True)
                self._thread_pid = os.getpid()
                self._thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(self._flush_s)
            try:
                self.flush(only_if_changed=True)
            except Exception as exc:  # keep polling: a failed round must not freeze the shard for good
                _log.warning("dsbench EPLB counter: writing %s failed (%s: %s)", self.path, type(exc).__name__, exc)

    def flush(self, only_if_changed: bool = False) -> None:
        """Write the current histograms atomically (a reader never sees a torn file). A snapshot of None (not
        now: the engine is capturing a CUDA graph) writes nothing; the next round tries again."""
        with self._lock:
            layers = self._snapshot()
            if layers is None or (only_if_changed and layers == self._written):
                return
            payload = {"format": FORMAT, "version": VERSION, "pid": os.getpid(), "updated_unix": time.time(),
                       **self.meta, "layers": layers}
            write_json(self.path, payload)
            self._written = layers
