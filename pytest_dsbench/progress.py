"""Live progress of long load runs: an updating line on a terminal, plain periodic lines everywhere else.

API (what the load generator calls)::

    from pytest_dsbench.progress import Progress

    with Progress(total=len(plan), label="tencent c=16", unit="req") as progress:
        for ...:
            ...
            progress.advance()               # one more request finished
            progress.advance(failed=1)       # one more, and it failed
    # leaving the block prints the final line (also on error)

``Progress(total, label, unit="req", *, stream=None, step_pct=10, heartbeat_s=30, min_interval_s=0.2)``;
``advance(n=1, *, failed=0)``; ``update(done, *, failed=None)`` (absolute); ``close()``. It is thread-safe and
cheap (a call that prints nothing costs a lock and a clock read).

Where the output goes:

* inside pytest (the run calls :func:`bind` with a :class:`Terminal` when pytest configures): through pytest's
  terminal writer with output capture suspended, so it is seen live even while the test's own output is
  captured;
* outside pytest: ``stream`` or ``sys.stderr``.

How it looks: on a TTY with capture off (``pytest -s``), or a bare TTY outside pytest, one line is rewritten
in place at most every ``min_interval_s``. Otherwise (CI logs, pipes, pods, and pytest's captured default) a
plain line is printed each time another ``step_pct`` percent is done and at least every ``heartbeat_s`` while
work advances, so logs show progress without control characters. ``DSBENCH_PROGRESS=live|lines|off``
overrides the choice.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import IO, Literal, Protocol

Mode = Literal["live", "lines", "off"]


class Terminal(Protocol):
    """A test runner's terminal: writes reach the user even while the test's own output is captured."""

    def available(self) -> bool:
        """False when the runner has no terminal to write to (then progress goes to ``sys.stderr``)."""
        ...

    def can_rewrite(self) -> bool:
        """True on a TTY whose output is not captured: a line may be rewritten in place."""
        ...

    def write_line(self, text: str) -> None: ...

    def rewrite(self, text: str, *, final: bool) -> None:
        """Replace the current line with ``text``; ``final`` ends the line."""
        ...


_BOUND: list[Terminal] = []


def bind(terminal: Terminal) -> None:
    """Route progress through ``terminal`` (the run binds pytest's when pytest configures)."""
    _BOUND[:] = [terminal]


def unbind() -> None:
    """Forget the terminal (its session is over)."""
    _BOUND.clear()


def _terminal() -> Terminal | None:
    terminal = _BOUND[0] if _BOUND else None
    return terminal if terminal is not None and terminal.available() else None


def _fmt_s(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, sec = divmod(int(seconds), 60)
    return f"{minutes}m{sec:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class Progress:
    """Progress of ``total`` units of work named ``label`` (see the module docstring for the API)."""

    def __init__(
        self,
        total: int,
        label: str,
        unit: str = "req",
        *,
        stream: IO[str] | None = None,
        step_pct: float = 10.0,
        heartbeat_s: float = 30.0,
        min_interval_s: float = 0.2,
    ) -> None:
        self.total = max(0, int(total))
        self.label = label
        self.unit = unit
        self.done = 0
        self.failed = 0
        self._stream = stream
        self._step_pct = step_pct
        self._heartbeat_s = heartbeat_s
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_emit = self._started
        self._last_step = 0
        self._closed = False
        self._live_width = 0
        self._last_said: tuple[int, int] | None = None  # (done, failed) of the last line written
        self.mode: Mode = self._choose_mode()

    # -- mode and output -------------------------------------------------------------------------------------
    def _choose_mode(self) -> Mode:
        forced = os.environ.get("DSBENCH_PROGRESS", "").strip().lower()
        if forced in ("live", "lines", "off"):
            return forced  # type: ignore[return-value]
        terminal = _terminal() if self._stream is None else None
        if terminal is not None:
            return "live" if terminal.can_rewrite() else "lines"
        stream = self._stream or sys.stderr
        isatty = getattr(stream, "isatty", None)
        return "live" if callable(isatty) and isatty() else "lines"

    def _write(self, text: str, *, live: bool, final: bool = False) -> None:
        self._last_said = (self.done, self.failed)
        terminal = _terminal() if self._stream is None else None
        if terminal is not None:
            if live:
                terminal.rewrite(text, final=final)
            else:
                terminal.write_line(text)
            return
        stream = self._stream or sys.stderr
        if live:
            padding = " " * max(0, self._live_width - len(text))
            self._live_width = len(text)
            stream.write("\r" + text + padding + ("\n" if final else ""))
        else:
            stream.write(text + "\n")
        stream.flush()

    def line(self) -> str:
        """The current progress as one line of text."""
        elapsed = time.monotonic() - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        pct = f" ({self.done / self.total * 100:.0f}%)" if self.total else ""
        eta = ""
        if self.total and rate > 0 and self.done < self.total:
            eta = f", eta {_fmt_s((self.total - self.done) / rate)}"
        failed = f", {self.failed} failed" if self.failed else ""
        return (
            f"[dsbench] {self.label}: {self.done}/{self.total} {self.unit}{pct}, {rate:.3g} {self.unit}/s, "
            f"elapsed {_fmt_s(elapsed)}{eta}{failed}"
        )

    # -- updates ---------------------------------------------------------------------------------------------
    def _maybe_emit(self) -> None:
        if self.mode == "off" or self._closed:
            return
        now = time.monotonic()
        if self.mode == "live":
            if now - self._last_emit >= self._min_interval_s:
                self._last_emit = now
                self._write(self.line(), live=True)
            return
        step = int(self.done / self.total * 100 // self._step_pct) if self.total and self._step_pct > 0 else 0
        if step > self._last_step or now - self._last_emit >= self._heartbeat_s:
            self._last_step = max(step, self._last_step)
            self._last_emit = now
            self._write(self.line(), live=False)

    def advance(self, n: int = 1, *, failed: int = 0) -> None:
        """``n`` more units are finished, ``failed`` of them unsuccessfully."""
        with self._lock:
            self.done += n
            self.failed += failed
            self._maybe_emit()

    def update(self, done: int, *, failed: int | None = None) -> None:
        """Set the absolute count of finished units (and failures)."""
        with self._lock:
            self.done = done
            if failed is not None:
                self.failed = failed
            self._maybe_emit()

    def close(self) -> None:
        """Print the final line once (live mode ends its line)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            said = (self.done, self.failed) == self._last_said
            if self.mode == "live" or (self.mode == "lines" and not said):
                self._write(self.line(), live=self.mode == "live", final=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
