"""OpenAI-compatible request bodies; the post-run reading of a streamed response lives in
:mod:`pytest_dsbench.load.readback` (re-exported here: :func:`parse_stream`, :class:`Parsed`).
"""

from __future__ import annotations

import json
from typing import Any

from pytest_dsbench.load.readback import Parsed, parse_stream

__all__ = ["Parsed", "encode_body", "parse_stream", "payload"]


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
