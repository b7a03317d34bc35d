"""Decode throughput per running batch size, read from the engines' own server logs (seed 003 ali decode).

Each engine's line format lives with the engine (``pytest_dsbench/engines/<name>/logformat.py``: SGLang's
``Decode batch`` line, vLLM's stat and iteration-details lines, LMDeploy's stat line); this module reads log
files with them. A format is a registered engine name, or ``auto`` (every engine's lines, in registry order).
Idle lines (no running request, or zero throughput) are not samples.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from pytest_dsbench.engines.adapters import get_adapter
from pytest_dsbench.engines.base import DecodeLine, EngineAdapter
from pytest_dsbench.engines.registry import ENGINE_NAMES, valid_engines

LogFormat = str
"""``auto`` or a registered engine name (``EngineBehaviour.decode_log_format``)."""


@dataclass(frozen=True)
class DecodeSample:
    """One logged decode throughput at one running batch size."""

    running: int
    gen_tok_s: float
    source: str
    line: int


@cache
def _adapters(fmt: LogFormat) -> tuple[EngineAdapter, ...]:
    if fmt != "auto" and fmt not in ENGINE_NAMES:
        raise ValueError(f"unknown decode log format {fmt!r}; valid values: auto, {valid_engines()}")
    return tuple(get_adapter(name) for name in (ENGINE_NAMES if fmt == "auto" else (fmt,)))


def parse_line(line: str, fmt: LogFormat = "auto") -> DecodeLine | None:
    """(running requests, generation tok/s, which format) of one log line, or None."""
    for adapter in _adapters(fmt):
        parsed = adapter.parse_decode_line(line)
        if parsed is not None:
            return parsed
    return None


def parse_lines(lines: Iterable[str], fmt: LogFormat = "auto", first_line: int = 0) -> list[DecodeSample]:
    """Every non-idle decode sample in ``lines``."""
    samples = []
    for n, line in enumerate(lines, start=first_line):
        parsed = parse_line(line, fmt)
        if parsed is not None and parsed[0] > 0 and parsed[1] > 0:
            samples.append(DecodeSample(parsed[0], parsed[1], parsed[2], n))
    return samples


class LogCursor:
    """Reads what a set of log files gained since the cursor was placed (one ali decode probe's lines)."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self.offsets = {p: (p.stat().st_size if p.is_file() else 0) for p in self.paths}

    def new_lines(self) -> list[str]:
        lines: list[str] = []
        for path in self.paths:
            if not path.is_file():
                continue
            with path.open("rb") as handle:
                handle.seek(self.offsets[path])
                data = handle.read()
            self.offsets[path] += len(data)
            lines += data.decode("utf-8", errors="replace").splitlines()
        return lines
