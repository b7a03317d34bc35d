"""The fake engine's SSE responses: OpenAI chunk semantics, with the streaming faults of ``fake_faults``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any, Protocol

from aiohttp import web

from pytest_dsbench.testing import fake_tokens as tok
from pytest_dsbench.testing.fake_load import keeps_generating_after_disconnect
from pytest_dsbench.testing.fake_model import FakeModel, Output


class FakeEngine(Protocol):
    """What streaming needs of the fake engine (:class:`pytest_dsbench.testing.fake_engine.FakeEngine`)."""

    config: Any
    model: FakeModel
    running: int
    streams_started: int
    tokens_streamed: int
    serial_lock: asyncio.Lock

    def response_id(self, prefix: str) -> str: ...
    def usage(self, outs: list[tuple[int, Output, str]], prompt_tokens: int, chat: bool) -> dict[str, Any]: ...
    def reasoning_key(self) -> str: ...
    def finish_reason(self, out: Output, body: dict[str, Any]) -> str: ...
    def tools_as_text(self, body: dict[str, Any]) -> bool: ...


def _segments(
    engine: FakeEngine, out: Output, body: dict[str, Any], chat: bool
) -> list[tuple[str, list[str]]]:
    """The output as (kind, pieces) runs: 'reasoning', 'content' or 'text', in generation order."""
    has = engine.config.has
    pieces = list(out.pieces)
    if out.stop_hit and has("stream_stop_leak"):
        pieces.append(out.stop_hit[0])
    if not chat:
        if has("stream_content_differs") and pieces:
            pieces = pieces[:-1]
        return [("text", pieces)]
    if has("no_reasoning_split"):
        return [("content", pieces)]
    if tok.END_THINK in pieces:
        cut = pieces.index(tok.END_THINK)
        reasoning, content = pieces[:cut], pieces[cut + 1 :]
        if has("stream_end_think_in_content") or has("think_tag_in_content"):
            content = [tok.END_THINK, *content]
        if body.get("stop") and has("stop_breaks_reasoning_split"):
            content = ["/think>", *content]
    else:
        reasoning, content = pieces, []
    if reasoning and reasoning[0] == tok.THINK:
        reasoning = reasoning[1:]
    if has("stream_reasoning_differs") and reasoning:
        reasoning = reasoning[1:]
    if has("stream_content_differs") and content:
        content = content[:-1]
    if out.tool_calls and not engine.tools_as_text(body):
        content = []
    runs: list[tuple[str, list[str]]] = [("reasoning", reasoning), ("content", content)]
    if has("reasoning_interleaved") and len(reasoning) > 1 and content:
        runs = [
            ("reasoning", reasoning[:-1]),
            ("content", content[:1]),
            ("reasoning", reasoning[-1:]),
            ("content", content[1:]),
        ]
    if has("json_in_reasoning") and body.get("response_format", {}).get("type", "text") != "text":
        runs = [("reasoning", reasoning + content)]
    return runs


async def _hang(request: web.Request) -> None:
    """Keep the connection open without sending anything, until the client gives up."""
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(0.05)


async def stream_response(
    engine: FakeEngine,
    request: web.Request,
    body: dict[str, Any],
    outs: list[tuple[int, Output, str]],
    prompt_tokens: int,
    chat: bool,
    *,
    extra_delay_s: float = 0.0,
) -> web.StreamResponse:
    """Write the SSE response for ``outs`` (one entry per choice); ``extra_delay_s`` is spread over the tokens
    (the load faults of :mod:`fake_load`). A client that goes away aborts the generation."""
    content_type = "application/json" if engine.config.has("stream_content_type_wrong") else "text/event-stream"
    response = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):  # the client disconnected: stop generating
        await _write_stream(engine, request, response, body, outs, prompt_tokens, chat, extra_delay_s)
    return response


async def _write_stream(
    engine: FakeEngine,
    request: web.Request,
    response: web.StreamResponse,
    body: dict[str, Any],
    outs: list[tuple[int, Output, str]],
    prompt_tokens: int,
    chat: bool,
    extra_delay_s: float,
) -> None:
    config = engine.config
    has = config.has
    cid = engine.response_id("chatcmpl" if chat else "cmpl")
    created = int(time.time())
    obj = (
        ("chat.completion" if has("stream_object_wrong") else "chat.completion.chunk")
        if chat
        else "text_completion"
    )
    typed = ["event: message"] if has("sse_event_field") else []
    newline: str = config.sse_newline
    want_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    usage = engine.usage(outs, prompt_tokens, chat)
    if has("stream_usage_off_by_one"):
        usage = {
            **usage,
            "completion_tokens": usage["completion_tokens"] + 1,
            "total_tokens": usage["total_tokens"] + 1,
        }

    client_gone = False
    events_sent = 0

    def framed(data: str) -> bytes:
        """One SSE event in this fake's framing (its line ends, and keep-alives/ids when asked)."""
        lines = [*typed, f"data: {data}"]
        if config.sse_extras:
            lines = [": ping", "", ": a comment inside the event", "retry: 3000", *lines]
        if has("sse_ids_with_keepalives"):
            lines = [": ping", "", f"id: {events_sent}", *lines]
        return newline.join([*lines, "", ""]).encode()

    if has("sse_retry_block"):
        await response.write(newline.join(["retry: 3000", "", ""]).encode())

    async def send(payload: dict[str, Any]) -> None:
        nonlocal client_gone, events_sent
        if client_gone:
            return
        try:
            events_sent += 1
            await response.write(framed(json.dumps(payload)))
        except ConnectionResetError:
            if not keeps_generating_after_disconnect(engine):
                raise  # the client went away: abort the generation
            client_gone = True  # the fault: keep generating for nobody

    def chunk(choices: list[dict[str, Any]], chunk_id: str = cid) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": chunk_id,
            "object": obj,
            "created": created,
            "model": config.model + ("-other" if has("wrong_response_model") else ""),
            "choices": choices,
        }
        if has("stream_usage_always"):
            payload["usage"] = usage
        return payload

    hang = has("stream_hang_under_concurrency") and engine.streams_started % 2 == 0
    await asyncio.sleep(config.ttft_ms / 1000)
    step = max(1, config.tokens_per_chunk)
    extra_itl_s = extra_delay_s / max(1, max(len(out.pieces) for _, out, _ in outs))
    want_logprobs = chat and body.get("logprobs")
    top = int(body.get("top_logprobs") or 0)
    for number, (index, out, prompt) in enumerate(outs):
        wire_index = 0 if has("stream_n_index_wrong") else index + (1 if has("choice_index_wrong") else 0)
        sent = 0
        position = 0
        for kind, pieces in _segments(engine, out, body, chat):
            for start in range(0, len(pieces), step):
                if sent > 0:
                    await asyncio.sleep(
                        (config.itl_ms + config.itl_ms_per_running * engine.running) / 1000 + extra_itl_s
                    )
                group = pieces[start : start + step]
                piece = "".join(group)
                if has("stream_splits_multibyte"):  # a detokenizer that flushes partial UTF-8 sequences
                    piece = "".join(c if c.isascii() else "\ufffd" for c in piece)
                if chat:
                    delta: dict[str, Any] = {}
                    if sent == 0 and not has("no_role_in_first_chunk"):
                        delta["role"] = "assistant"
                    elif sent == 1 and has("role_empty_later"):
                        delta["role"] = ""
                    delta[engine.reasoning_key() if kind == "reasoning" else "content"] = piece
                    choice: dict[str, Any] = {"index": wire_index, "delta": delta, "finish_reason": None}
                    if want_logprobs:
                        shift = 1 if has("stream_logprobs_differ") else 0
                        choice["logprobs"] = {
                            "content": [
                                engine.model.logprob_entry(p, position + i + shift, top)
                                for i, p in enumerate(group)
                            ]
                        }
                else:
                    echo = prompt if body.get("echo") and sent == 0 else ""
                    choice = {"index": wire_index, "text": echo + piece, "finish_reason": None}
                position += len(group)
                await send(chunk([choice]))
                engine.tokens_streamed += len(group)
                sent += 1
            if hang and number == 0 and sent >= 1:
                await _hang(request)
                return
        if chat and out.tool_calls and not engine.tools_as_text(body):
            for call_index, call in enumerate(out.tool_calls):
                arguments = "{}" if has("stream_tool_args_empty") else call["function"]["arguments"]
                first = {
                    "index": call_index,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""},
                }
                delta = {"tool_calls": [first]} | ({"role": "assistant"} if sent == 0 else {})
                await send(chunk([{"index": wire_index, "delta": delta, "finish_reason": None}]))
                size = config.tool_args_chunk_chars or max(1, len(arguments))
                for start in range(0, len(arguments), size):
                    part = {"index": call_index, "function": {"arguments": arguments[start : start + size]}}
                    await send(
                        chunk([{"index": wire_index, "delta": {"tool_calls": [part]}, "finish_reason": None}])
                    )
                sent += 1
        if chat and sent == 0:
            delta = {} if has("no_role_in_first_chunk") else {"role": "assistant"}
            await send(
                chunk([{"index": wire_index, "delta": delta | {"content": ""}, "finish_reason": None}])
            )
        final: dict[str, Any] = {"index": wire_index, "finish_reason": engine.finish_reason(out, body)}
        if chat:
            final["delta"] = {}
        else:
            final["text"] = ""
        last = number == len(outs) - 1
        finish_chunk = chunk([final], cid + "-x" if has("stream_id_changes") else cid)
        if last and want_usage and has("usage_on_finish_chunk"):
            finish_chunk["usage"] = usage
        await send(finish_chunk)
        if has("duplicate_finish_reason"):
            await send(finish_chunk)
        if has("content_after_finish"):
            extra = (
                {"index": wire_index, "delta": {"content": " "}, "finish_reason": None}
                if chat
                else {"index": wire_index, "text": " ", "finish_reason": None}
            )
            await send(chunk([extra]))
    if want_usage and not has("no_stream_usage") and not has("usage_on_finish_chunk"):
        usage_chunk = chunk([]) | {"usage": usage}
        await send(usage_chunk)
        if has("duplicate_usage_chunk"):
            await send(usage_chunk)
    if client_gone:
        return
    if not has("no_done"):
        done = framed("[DONE]")
        await response.write(done[: -len(newline)] if has("sse_unterminated_last_event") else done)
        if has("data_after_done"):
            await send(chunk([]))
    await response.write_eof()
