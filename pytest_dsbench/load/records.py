"""Per-request records of a load run, and the raw JSONL file every run leaves behind.

All times are seconds from the run's start (a monotonic clock shared by the worker processes of one host), so
records from several workers merge without conversion and any other tool's metric definition can be recomputed
offline from the file (bench_tools.md (c): "always store the raw per-request arrays").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pytest_dsbench import _atomic


@dataclass
class RequestRecord:
    """What happened to one request, as the client saw it."""

    index: int
    prompt_len: int
    max_tokens: int
    worker: int = 0
    scheduled_s: float = 0.0
    dispatched_s: float = 0.0
    start_s: float = 0.0
    chunk_s: list[float] = field(default_factory=list)
    answer_s: float | None = None
    end_s: float = 0.0
    success: bool = False
    error: str = ""
    http_status: int | None = None
    events: int = 0
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None
    retok_len: int | None = None
    text: str = ""

    @property
    def ttft_s(self) -> float | None:
        return self.chunk_s[0] - self.start_s if self.success and self.chunk_s else None

    @property
    def queue_wait_s(self) -> float:
        """Time spent waiting for a max-concurrency slot (sglang excludes it from TTFT; we report it)."""
        return max(0.0, self.start_s - self.dispatched_s)

    @property
    def send_lag_s(self) -> float:
        """How late the dispatcher handed the request over, compared with the arrival schedule."""
        return max(0.0, self.dispatched_s - self.scheduled_s)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ttft_ms"] = None if self.ttft_s is None else round(self.ttft_s * 1000, 4)
        data["e2e_ms"] = round((self.end_s - self.start_s) * 1000, 4)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def write_jsonl(path: Path, records: Iterable[RequestRecord], header: dict[str, Any] | None = None) -> Path:
    """Write records (after an optional ``{"run": header}`` line) atomically as JSON lines."""
    lines = [json.dumps({"run": header}, default=str)] if header is not None else []
    lines += [json.dumps(r.to_json(), ensure_ascii=False) for r in records]
    _atomic.write_text(path, "\n".join(lines) + "\n")
    return path


def read_jsonl(path: Path) -> tuple[dict[str, Any], list[RequestRecord]]:
    """The header and records of a file written by :func:`write_jsonl`."""
    header: dict[str, Any] = {}
    records: list[RequestRecord] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        data = json.loads(line)
        if "run" in data and len(data) == 1:
            header = data["run"]
        else:
            records.append(RequestRecord.from_json(data))
    return header, records


def merge(parts: Sequence[Sequence[RequestRecord]]) -> list[RequestRecord]:
    """Records of several workers in request order."""
    return sorted((r for part in parts for r in part), key=lambda r: r.index)
