"""OpenAI-compatible request bodies and the post-run reading of a streamed response into a request record.

The timing rules are sglang.bench_serving's (bench_tools.md 1.6 / (c)), applied to the arrival time of the
network read that completed each SSE event:

* TTFT starts at the first chunk whose ``choices[0].text`` (completions) or ``delta.content`` /
  ``delta.reasoning_content`` / ``delta.reasoning`` (chat) is non-empty; role-only and usage-only chunks never
  start it. Reasoning counts (sglang PR #23954), and the first *answer* chunk is kept separately (TTFAT).
* Every later chunk with text adds one ITL sample (per chunk, not per token).
* The end of a request is the last event received (``[DONE]`` included).
* ``usage.completion_tokens`` is kept when the server streams it (the client asks for it with
  ``stream_options.include_usage``); the output length falls back to the requested length, as sglang's does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pytest_dsbench.load.http import Response

_loads: Callable[[bytes], Any]
try:  # orjson (optional) reads a chunk several times faster than json
    import orjson

    _loads = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    _loads = json.loads

END_THINK = "</think>"
THINK = "<think>"


def payload(
    model: str,
    prompt: str,
    max_tokens: int,
    *,
    chat: bool,
    ignore_eos: bool = True,
    temperature: float = 0.0,
    include_usage: bool = True,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The request body: sglang's defaults (temperature 0, ignore_eos, stream) plus usage in the stream."""
    body: dict[str, Any] = {"model": model, "temperature": temperature, "stream": True}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
        body["max_completion_tokens"] = max_tokens
        body["max_tokens"] = max_tokens
    else:
        body["prompt"] = prompt
        body["max_tokens"] = max_tokens
    if ignore_eos:
        body["ignore_eos"] = True
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    body.update(extra or {})
    return body


def encode_body(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass
class Parsed:
    """A streamed response read back: text-chunk times, answer start, end, text, usage and any error."""

    chunk_s: list[float] = field(default_factory=list)
    answer_s: float | None = None
    end_s: float = 0.0
    text: str = ""
    events: int = 0
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None
    error: str = ""
    done: bool = False


def _data(block: bytes) -> bytes | None:
    """The ``data`` of one SSE event block (lines joined with ``\\n``), or None when it has none."""
    if block.startswith(b"data: ") and b"\n" not in block:  # the common case: one data line
        return block[6:]
    lines = [line for line in block.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[6:] if line[5:6] == b" " else line[5:] for line in lines)


def _events(pieces: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    """SSE ``data`` payloads with the arrival time of the read that completed each event."""
    out: list[tuple[float, bytes]] = []
    buf = b""
    for t, data in pieces:
        buf = buf + data if buf else data
        if b"\r" in buf:
            tail = b"\r" if buf.endswith(b"\r") else b""  # may be the first half of a CRLF
            body = buf[:-1] if tail else buf
            buf = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        start = 0
        find = buf.find
        while (end := find(b"\n\n", start)) >= 0:
            if buf.startswith(b"data: ", start) and find(b"\n", start, end) < 0:
                out.append((t, buf[start + 6 : end]))  # the common case: one data line
            elif (payload := _data(buf[start:end])) is not None:
                out.append((t, payload))
            start = end + 2
        buf = buf[start:]
    if buf.strip() and pieces and (payload := _data(buf.strip(b"\n"))) is not None:
        out.append((pieces[-1][0], payload))
    return out


def _error_text(obj: dict[str, Any]) -> str:
    err = obj.get("error", obj)
    if isinstance(err, dict):
        return str(err.get("message") or err)[:300]
    return str(err)[:300]


def parse_stream(resp: Response, *, chat: bool) -> Parsed:
    """Read a finished streamed response back (never raises: problems become ``Parsed.error``)."""
    out = Parsed(end_s=resp.end_s)
    if resp.error:
        out.error = resp.error
        return out
    if resp.status != 200:
        body = b"".join(p for _, p in resp.pieces)[:300].decode("utf-8", errors="replace")
        out.error = f"HTTP {resp.status}: {body}"
        return out
    reasoning_parts: list[str] = []
    content_parts: list[str] = []
    chunk_s = out.chunk_s
    answer_s: float | None = None
    content = ""
    loads = _loads
    for t, data in _events(resp.pieces):
        if data == b"[DONE]":
            out.done = True
            out.events += 1
            out.end_s = t
            continue
        try:
            obj = loads(data)
        except ValueError:
            out.error = f"stream event is not JSON: {data[:120]!r}"
            return out
        out.events += 1
        out.end_s = t
        if type(obj) is not dict:
            continue
        choices = obj.get("choices")
        if "error" in obj and not choices:
            out.error = f"error event in stream: {_error_text(obj)}"
            return out
        usage = obj.get("usage")
        if usage and type(usage) is dict:
            if isinstance(usage.get("completion_tokens"), int):
                out.usage_completion_tokens = usage["completion_tokens"]
            if isinstance(usage.get("prompt_tokens"), int):
                out.usage_prompt_tokens = usage["prompt_tokens"]
        if not choices or type(choices) is not list:
            continue
        first = choices[0] or {}
        if chat:
            delta = first.get("delta") or {}
            piece = delta.get("content") or ""
            thought = delta.get("reasoning_content") or delta.get("reasoning") or ""
        else:
            piece = first.get("text") or ""
            thought = ""
        if not piece and not thought:
            continue
        chunk_s.append(t)
        if thought:
            reasoning_parts.append(thought)
        if piece:
            content_parts.append(piece)
            if answer_s is None:
                content += piece
                if _answer_started(content):
                    answer_s = t
    out.answer_s = answer_s
    out.text = "".join(reasoning_parts) + "".join(content_parts)
    return out


def _answer_started(content: str) -> bool:
    """True once the streamed content holds answer text: after ``</think>``, or with no think block at all."""
    if END_THINK in content:
        return bool(content.rsplit(END_THINK, 1)[1].strip())
    return THINK not in content and bool(content.strip())
