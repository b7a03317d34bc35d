"""HTTP exchanges as the checks see them: a plain reply, or a stream read byte by byte through :mod:`sse`.

Every request has a timeout (the session's ``--request-timeout`` unless a check asks for less); a stream also
has an overall deadline, so a server that never sends ``[DONE]`` fails the check instead of hanging the run.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import httpx

from pytest_dsbench.sse import OpenAIStream, SSEParser, read_openai_stream


@dataclass
class Reply:
    """One non-streamed HTTP exchange."""

    method: str
    path: str
    status: int
    headers: httpx.Headers
    body: bytes
    elapsed_s: float

    @property
    def content_type(self) -> str:
        return str(self.headers.get("content-type", "")).split(";")[0].strip().lower()

    @cached_property
    def json(self) -> Any:
        """The parsed body, or ``None`` when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def obj(self) -> dict[str, Any]:
        """The body as a JSON object (empty dict when it is not one)."""
        return self.json if isinstance(self.json, dict) else {}

    def error_message(self) -> str | None:
        """The human-readable error message, nested (``error.message``) or flat (``message``)."""
        body = self.obj()
        nested = body.get("error")
        if isinstance(nested, dict) and isinstance(nested.get("message"), str) and nested["message"].strip():
            return str(nested["message"])
        if isinstance(body.get("message"), str) and body["message"].strip():
            return str(body["message"])
        return None

    def envelope(self) -> str:
        """'nested' (``{"error": {...}}``), 'flat' (``{"object": "error", "message": ...}``), or 'other'."""
        body = self.obj()
        if isinstance(body.get("error"), dict):
            return "nested"
        if "message" in body and ("object" in body or "type" in body or "code" in body):
            return "flat"
        return "other"

    def describe(self) -> str:
        text = self.body[:200].decode("utf-8", "replace")
        return f"HTTP {self.status} {text}"


@dataclass
class ChoiceStream:
    """Everything one choice index received over a chat or completions stream."""

    index: int
    chunks: int = 0
    roles: list[Any] = field(default_factory=list)
    first_role: Any = None
    text: str = ""
    fields: dict[str, str] = field(default_factory=dict)
    sequence: list[tuple[str, str]] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    deltas_after_finish: int = 0
    tool_deltas: list[dict[str, Any]] = field(default_factory=list)
    logprobs: list[dict[str, Any]] = field(default_factory=list)

    def field_text(self, name: str) -> str:
        return self.fields.get(name, "")


@dataclass
class StreamReply:
    """One streamed exchange: status and headers, the strictly-read SSE stream, and per-choice aggregates."""

    path: str
    status: int
    headers: httpx.Headers
    body: bytes
    stream: OpenAIStream
    elapsed_s: float
    timed_out: bool = False

    @property
    def content_type(self) -> str:
        return str(self.headers.get("content-type", "")).split(";")[0].strip().lower()

    def as_reply(self) -> Reply:
        """The exchange as a plain reply (for an error status before any stream started)."""
        return Reply("POST", self.path, self.status, self.headers, self.body, self.elapsed_s)

    @property
    def chunks(self) -> list[dict[str, Any]]:
        return self.stream.chunks

    def usage_chunks(self) -> list[dict[str, Any]]:
        return [c for c in self.chunks if c.get("usage") is not None]

    def choices(
        self, reasoning_keys: tuple[str, ...] = ("reasoning", "reasoning_content")
    ) -> dict[int, ChoiceStream]:
        """Per choice index: role(s), joined text/content/reasoning, finish reasons, order of deltas."""
        out: dict[int, ChoiceStream] = {}
        for chunk in self.chunks:
            for choice in chunk.get("choices") or []:
                if not isinstance(choice, dict):
                    continue
                index = choice.get("index")
                slot = index if isinstance(index, int) else -1
                agg = out.setdefault(slot, ChoiceStream(index=slot))
                finished_before = bool(agg.finish_reasons)
                agg.chunks += 1
                delta = choice.get("delta")
                carried = False
                if isinstance(delta, dict):
                    if agg.chunks == 1:
                        agg.first_role = delta.get("role")
                    if "role" in delta:
                        agg.roles.append(delta.get("role"))
                    for key in ("content", *reasoning_keys):
                        value = delta.get(key)
                        if isinstance(value, str) and value:
                            agg.fields[key] = agg.fields.get(key, "") + value
                            agg.sequence.append((key, value))
                            carried = True
                    if delta.get("tool_calls"):
                        agg.tool_deltas.extend(d for d in delta["tool_calls"] if isinstance(d, dict))
                        carried = True
                elif isinstance(choice.get("text"), str) and choice["text"]:
                    agg.text += choice["text"]
                    agg.sequence.append(("text", choice["text"]))
                    carried = True
                logprobs = choice.get("logprobs")
                if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
                    agg.logprobs.extend(logprobs["content"])
                if finished_before and carried:
                    agg.deltas_after_finish += 1
                if choice.get("finish_reason") is not None:
                    agg.finish_reasons.append(choice["finish_reason"])
        return out


_DROPPED = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)
"""What a request on a pooled connection the server has already closed raises."""

RECENT_REQUESTS = 4
_BODY_CHARS = 160


def _describe_request(method: str, path: str, kwargs: dict[str, Any]) -> str:
    """``METHOD path body`` on one line, the body cut at :data:`_BODY_CHARS` (bodies carry no API key)."""
    if kwargs.get("json") is not None:
        body = json.dumps(kwargs["json"], ensure_ascii=False)
    elif kwargs.get("content") is not None:
        content = kwargs["content"]
        body = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
    else:
        return f"{method} {path}"
    body = " ".join(body.split())
    return f"{method} {path} {body if len(body) <= _BODY_CHARS else body[: _BODY_CHARS - 3] + '...'}"


class ApiClient:
    """Thin wrapper over one ``httpx.Client`` that returns :class:`Reply` / :class:`StreamReply`."""

    def __init__(self, client: httpx.Client, request_timeout_s: float) -> None:
        self.http = client
        self.request_timeout_s = request_timeout_s
        self.dropped_connections = 0
        """Requests sent again because the pooled connection was dead before any reply."""
        self.recent: deque[str] = deque(maxlen=RECENT_REQUESTS)
        """The last requests and what came of them (``POST /v1/completions {...} -> HTTP 200``), so a check that
        fails on a transport error names what it sent before it (the request that crashed a server)."""
        self._count_lock = threading.Lock()

    def _timeout(self, timeout_s: float | None) -> httpx.Timeout:
        seconds = timeout_s or self.request_timeout_s
        return httpx.Timeout(seconds, connect=min(5.0, seconds))

    def _open(self, method: str, path: str, timeout: httpx.Timeout, **kwargs: Any) -> httpx.Response:
        """Send and return the reply with its body unread; if the pooled connection is dead before the reply's
        status line, send once more on a new connection.

        A server that closes a keep-alive connection after an error reply without ``Connection: close`` (vLLM
        0.20 after a 400, seen on an H100) leaves a dead socket in the pool, and the next request on it fails
        before any reply. That is not the next check's failure: httpx drops the broken connection and the request
        goes once more, counted in ``dropped_connections``. A reply cut off after its status line is never
        resent: that is the server's failure, and it propagates."""
        request = self.http.build_request(method, path, timeout=timeout, **kwargs)
        sent = _describe_request(method, path, kwargs)
        try:
            try:
                response = self.http.send(request, stream=True)
            except _DROPPED as exc:
                self.recent.append(f"{sent} -> {type(exc).__name__} (sent again)")
                with self._count_lock:
                    self.dropped_connections += 1
                response = self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            self.recent.append(f"{sent} -> {type(exc).__name__}")
            raise
        self.recent.append(f"{sent} -> HTTP {response.status_code}")
        return response

    def _send(self, method: str, path: str, timeout: httpx.Timeout, **kwargs: Any) -> httpx.Response:
        """:meth:`_open`, then read the whole body."""
        response = self._open(method, path, timeout, **kwargs)
        try:
            response.read()
        finally:
            response.close()
        return response

    def get(self, path: str, timeout_s: float | None = None) -> Reply:
        started = time.monotonic()
        response = self._send("GET", path, self._timeout(timeout_s))
        return Reply(
            "GET", path, response.status_code, response.headers, response.content, time.monotonic() - started
        )

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Reply:
        started = time.monotonic()
        timeout = self._timeout(timeout_s)
        if content is not None:
            response = self._send("POST", path, timeout, content=content, headers=headers)
        else:
            response = self._send("POST", path, timeout, json=body, headers=headers)
        return Reply(
            "POST", path, response.status_code, response.headers, response.content, time.monotonic() - started
        )

    def stream(self, path: str, body: dict[str, Any], *, timeout_s: float | None = None) -> StreamReply:
        """POST and read the response as an event stream, whatever its status (errors are kept as bodies)."""
        seconds = timeout_s or self.request_timeout_s
        started = time.monotonic()
        deadline = started + seconds
        parser = SSEParser()
        events = []
        pieces: list[bytes] = []
        timed_out = False
        response = self._open("POST", path, self._timeout(seconds), json=body)  # a timeout here propagates
        status, headers = response.status_code, response.headers
        try:
            for piece in response.iter_raw():
                pieces.append(piece)
                events.extend(parser.feed(piece))
                if time.monotonic() > deadline:
                    timed_out = True
                    break
        except httpx.TimeoutException:
            timed_out = True
        finally:
            response.close()
        events.extend(parser.close())
        body_bytes = b"".join(pieces)
        stream = read_openai_stream(events, parser) if status == 200 else OpenAIStream()
        if timed_out:
            stream.problems.append(f"stream did not finish within {seconds:g} s")
        return StreamReply(path, status, headers, body_bytes, stream, time.monotonic() - started, timed_out)
