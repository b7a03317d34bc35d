"""Keeps the routing counter's device-to-host copies out of CUDA-graph captures.

While a stream captures a CUDA graph (vLLM and SGLang capture their decode graphs at start-up, and again for
torch.compile's pieces), a synchronising call from any other thread, such as the flusher's ``.tolist()``,
invalidates the capture and the engine dies (``operation not permitted when stream is capturing``, then
``cudaErrorStreamCaptureInvalidated``); seen on vLLM 0.20.1 on an H100. The guard wraps the graph class's
``capture_begin`` / ``capture_end``: a capture waits for a snapshot in progress to finish, and no snapshot starts
while a capture is open (the flusher skips that round and tries again at the next).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class CaptureGuard:
    """Counts open graph captures of one graph class and excludes snapshots while any is open."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = 0
        self._installed_on: type | None = None

    @property
    def open_captures(self) -> int:
        return self._open

    def install(self, graph_class: type | None = None) -> bool:
        """Wrap ``graph_class`` (default ``torch.cuda.CUDAGraph``) once; False where there is none to wrap.

        One guard wraps one class: asking it to wrap another is a programming error."""
        if graph_class is None:
            try:
                import torch

                graph_class = torch.cuda.CUDAGraph
            except (ImportError, AttributeError):
                return False
        if self._installed_on is not None:
            if self._installed_on is not graph_class:
                raise ValueError(f"this guard already wraps {self._installed_on.__name__}, not {graph_class.__name__}")
            return True
        begin = getattr(graph_class, "capture_begin", None)
        end = getattr(graph_class, "capture_end", None)
        if begin is None or end is None:
            return False
        guard = self

        def capture_begin(graph: Any, *args: Any, **kwargs: Any) -> Any:
            with guard._lock:  # waits for a snapshot in progress
                guard._open += 1
            try:
                return begin(graph, *args, **kwargs)
            except BaseException:
                guard._closed()
                raise

        def capture_end(graph: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return end(graph, *args, **kwargs)
            finally:
                guard._closed()

        graph_class.capture_begin = capture_begin  # type: ignore[attr-defined]
        graph_class.capture_end = capture_end  # type: ignore[attr-defined]
        self._installed_on = graph_class
        return True

    def _closed(self) -> None:
        with self._lock:
            self._open = max(0, self._open - 1)

    @contextmanager
    def outside_capture(self) -> Iterator[bool]:
        """Hold captures off for the block; yields False (do nothing device-side) while one is open."""
        with self._lock:
            yield self._open == 0


GUARD = CaptureGuard()
"""The engine process's guard, installed by the routing recorder."""
