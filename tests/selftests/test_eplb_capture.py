"""The routing counter never copies to the host while the engine captures a CUDA graph (a host sync from the
flusher thread invalidates the capture and kills the engine): captures wait for a snapshot in progress, and
the flusher skips rounds while a capture is open, writing again once it closes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_dsbench.eplb.capture import CaptureGuard
from pytest_dsbench.eplb.counts import CounterWriter


class FakeGraph:
    """Stands in for torch.cuda.CUDAGraph: records what happened, can fail to begin."""

    events: list[str]

    def capture_begin(self, pool: Any = None, capture_error_mode: str = "global") -> None:
        if capture_error_mode == "fail":
            raise RuntimeError("capture could not begin")
        self.events.append("begin")

    def capture_end(self) -> None:
        self.events.append("end")


@pytest.fixture
def graph_class() -> type[FakeGraph]:
    return type("Graph", (FakeGraph,), {"events": []})


def test_no_snapshot_while_a_capture_is_open(graph_class: type[FakeGraph]) -> None:
    guard = CaptureGuard()
    assert guard.install(graph_class)
    graph = graph_class()
    graph.capture_begin(capture_error_mode="global")
    with guard.outside_capture() as safe:
        assert not safe
    graph.capture_end()
    with guard.outside_capture() as safe:
        assert safe
    assert graph.events == ["begin", "end"]


def test_a_capture_waits_for_a_snapshot_in_progress(graph_class: type[FakeGraph]) -> None:
    guard = CaptureGuard()
    guard.install(graph_class)
    graph = graph_class()
    began = threading.Event()
    capture = threading.Thread(target=lambda: (graph.capture_begin(), began.set()))
    with guard.outside_capture() as safe:
        assert safe
        capture.start()
        assert not began.wait(0.2), "the capture began during a snapshot"
    assert began.wait(5)
    capture.join()
    assert guard.open_captures == 1


def test_a_capture_that_fails_to_begin_does_not_stop_snapshots_forever(graph_class: type[FakeGraph]) -> None:
    guard = CaptureGuard()
    guard.install(graph_class)
    with pytest.raises(RuntimeError, match="capture could not begin"):
        graph_class().capture_begin(capture_error_mode="fail")
    assert guard.open_captures == 0


def test_installing_twice_wraps_once(graph_class: type[FakeGraph]) -> None:
    guard = CaptureGuard()
    guard.install(graph_class)
    wrapped = graph_class.capture_begin
    guard.install(graph_class)
    assert graph_class.capture_begin is wrapped


def test_the_writer_skips_a_round_during_a_capture_and_writes_after(tmp_path: Path) -> None:
    guard = CaptureGuard()
    graph_class = type("Graph", (FakeGraph,), {"events": []})
    guard.install(graph_class)

    def snapshot() -> list[dict[str, Any]] | None:
        with guard.outside_capture() as safe:
            return [{"layer": 0, "counts": [1, 2]}] if safe else None

    writer = CounterWriter(tmp_path / "counts.json", {"engine": "fake"}, snapshot, flush_s=0.05)
    graph = graph_class()
    graph.capture_begin()
    writer.ensure_polling()
    time.sleep(0.3)
    assert not writer.path.exists(), "the writer copied counts during a capture"
    graph.capture_end()
    deadline = time.monotonic() + 5
    while not writer.path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads(writer.path.read_text())["layers"] == [{"layer": 0, "counts": [1, 2]}]


def test_counts_that_grow_without_a_python_record_call_reach_the_shard(tmp_path: Path) -> None:
    """Under CUDA graphs the counting ops replay on the device and ``record`` never runs: the writer polls."""
    counts = [0, 0]

    def snapshot() -> list[dict[str, Any]]:
        return [{"layer": 0, "counts": list(counts)}]

    def written() -> list[int] | None:
        return json.loads(writer.path.read_text())["layers"][0]["counts"] if writer.path.exists() else None

    def wait_for(value: list[int]) -> list[int] | None:
        deadline = time.monotonic() + 5
        while written() != value and time.monotonic() < deadline:
            time.sleep(0.05)
        return written()

    writer = CounterWriter(tmp_path / "counts.json", {"engine": "fake"}, snapshot, flush_s=0.05)
    writer.ensure_polling()  # the eager calls at start-up start the thread
    assert wait_for([0, 0]) == [0, 0]
    counts[:] = [3, 5]  # graph replays: the device counters grow, no Python call
    assert wait_for([3, 5]) == [3, 5]


def test_an_unchanged_snapshot_is_not_rewritten(tmp_path: Path) -> None:
    writer = CounterWriter(tmp_path / "counts.json", {"engine": "fake"}, lambda: [{"layer": 0}], flush_s=10)
    writer.flush(only_if_changed=True)
    first = writer.path.stat().st_mtime_ns
    time.sleep(0.01)
    writer.flush(only_if_changed=True)
    assert writer.path.stat().st_mtime_ns == first


def test_a_torch_without_graph_capture_methods_installs_nothing() -> None:
    assert CaptureGuard().install(type("NoGraphs", (), {})) is False


def test_one_guard_refuses_to_wrap_a_second_class(graph_class: type[FakeGraph]) -> None:
    guard = CaptureGuard()
    guard.install(graph_class)
    with pytest.raises(ValueError, match=r"already wraps Graph, not Other"):
        guard.install(type("Other", (FakeGraph,), {"events": []}))


def test_a_failing_poll_round_does_not_stop_polling(tmp_path: Path) -> None:
    calls = []

    def snapshot() -> list[dict[str, Any]]:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("CUDA error: an illegal memory access")
        return [{"layer": 0, "counts": [1]}]

    writer = CounterWriter(tmp_path / "counts.json", {"engine": "fake"}, snapshot, flush_s=0.05)
    writer.ensure_polling()
    deadline = time.monotonic() + 5
    while not writer.path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer.path.exists() and len(calls) >= 2
