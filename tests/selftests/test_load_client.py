"""The streaming client: HTTP/1.1 framing at any byte boundary, and sglang's timing rules for SSE chunks."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from pytest_dsbench.load.client import parse_stream, payload
from pytest_dsbench.load.http import Pool, Response, Target, _Connection


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.aborted = False
        self.closing = False

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


def feed(raw: bytes, step: int) -> Response:
    """Feed a raw HTTP response to a connection ``step`` bytes at a time; return what it parsed."""

    async def go() -> Response:
        conn = _Connection()
        conn.connection_made(FakeTransport())
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        conn.start(waiter)
        for i in range(0, len(raw), step):
            conn.data_received(raw[i : i + step])
            if waiter.done():
                break
        if not waiter.done():
            conn.connection_lost(None)
        return await waiter

    return asyncio.run(go())


def chunked(*parts: bytes) -> bytes:
    body = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts)
    return (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n"
        + body
        + b"0\r\n\r\n"
    )


def sse(obj: Any) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"


def completion(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "text": text, "finish_reason": None}]}


def chat(**delta: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


EVENTS = [
    sse(completion("Hel")),
    sse(completion("lo")),
    sse({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
    sse(b"[DONE]"),
]


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 10_000])
def test_chunked_body_is_reassembled_at_any_byte_boundary(step: int) -> None:
    resp = feed(chunked(*EVENTS), step)
    assert resp.status == 200 and not resp.error
    assert b"".join(p for _, p in resp.pieces) == b"".join(EVENTS)


def test_content_length_body_completes_without_closing() -> None:
    body = b"".join(EVENTS)
    resp = feed(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body, 5)
    assert b"".join(p for _, p in resp.pieces) == body and not resp.error


def test_body_without_length_ends_when_the_server_closes() -> None:
    resp = feed(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + EVENTS[0], 4)
    assert b"".join(p for _, p in resp.pieces) == EVENTS[0] and not resp.error


def test_connection_closed_mid_chunk_is_an_error() -> None:
    raw = chunked(*EVENTS)
    resp = feed(raw[: len(raw) // 2], 10_000)
    assert "closed the connection mid-response" in resp.error


def test_bad_chunk_size_is_an_error() -> None:
    resp = feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 100)
    assert "bad chunk size" in resp.error


def test_ttft_starts_at_the_first_chunk_with_text_not_role_or_usage() -> None:
    pieces = [
        (1.0, sse(chat(role="assistant"))),
        (2.0, sse(chat(content="Hi"))),
        (3.0, sse(chat(content=" there"))),
        (4.0, sse({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}})),
        (5.0, sse(b"[DONE]")),
    ]
    parsed = parse_stream(Response(status=200, pieces=pieces, end_s=5.0), chat=True)
    assert parsed.chunk_s == [2.0, 3.0]
    assert parsed.end_s == 5.0  # the last line received, [DONE] included
    assert parsed.usage_completion_tokens == 2 and parsed.usage_prompt_tokens == 1
    assert parsed.text == "Hi there" and parsed.done


def test_reasoning_starts_ttft_and_the_answer_starts_ttfat() -> None:
    pieces = [
        (1.0, sse(chat(reasoning="think"))),
        (2.0, sse(chat(reasoning_content="more"))),
        (3.0, sse(chat(content="42"))),
        (4.0, sse(b"[DONE]")),
    ]
    parsed = parse_stream(Response(status=200, pieces=pieces), chat=True)
    assert parsed.chunk_s == [1.0, 2.0, 3.0] and parsed.answer_s == 3.0


def test_inline_think_block_delays_the_answer_until_the_end_tag() -> None:
    pieces = [
        (1.0, sse(completion("<think>hmm"))),
        (2.0, sse(completion("</think>"))),
        (3.0, sse(completion("\n\n"))),
        (4.0, sse(completion("yes"))),
    ]
    parsed = parse_stream(Response(status=200, pieces=pieces), chat=False)
    assert parsed.answer_s == 4.0


def test_events_in_one_network_read_share_its_arrival_time() -> None:
    pieces = [(1.0, sse(completion("a")) + sse(completion("b"))), (2.0, sse(completion("c")))]
    assert parse_stream(Response(status=200, pieces=pieces), chat=False).chunk_s == [1.0, 1.0, 2.0]


def test_event_split_over_reads_counts_when_it_completes() -> None:
    event = sse(completion("abc"))
    pieces = [(1.0, event[:10]), (2.0, event[10:])]
    assert parse_stream(Response(status=200, pieces=pieces), chat=False).chunk_s == [2.0]


def test_crlf_framed_events_are_read() -> None:
    raw = b"data: " + json.dumps(completion("x")).encode() + b"\r\n\r\n"
    pieces = [(1.0, raw[:-1]), (2.0, raw[-1:])]
    assert parse_stream(Response(status=200, pieces=pieces), chat=False).chunk_s == [2.0]


def test_http_error_status_fails_the_request_with_the_body() -> None:
    parsed = parse_stream(Response(status=404, pieces=[(1.0, b'{"error": "no such model"}')]), chat=False)
    assert parsed.error.startswith("HTTP 404: ") and "no such model" in parsed.error


def test_error_event_in_the_stream_fails_the_request() -> None:
    pieces = [(1.0, sse(completion("a"))), (2.0, sse({"error": {"message": "engine died"}}))]
    assert "engine died" in parse_stream(Response(status=200, pieces=pieces), chat=False).error


def test_non_json_event_fails_the_request() -> None:
    parsed = parse_stream(Response(status=200, pieces=[(1.0, b"data: {oops\n\n")]), chat=False)
    assert "not JSON" in parsed.error


def test_payload_follows_sglang_defaults_and_asks_for_usage() -> None:
    body = payload("m", "hi", 16, chat=False)
    assert body == {
        "model": "m",
        "prompt": "hi",
        "max_tokens": 16,
        "temperature": 0.0,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    chat_body = payload("m", "hi", 8, chat=True, include_usage=False, ignore_eos=False)
    assert chat_body["messages"] == [{"role": "user", "content": "hi"}] and chat_body["max_completion_tokens"] == 8
    assert "stream_options" not in chat_body and "ignore_eos" not in chat_body


def test_request_bytes_carry_the_path_prefix_host_and_length() -> None:
    data = Target.parse("https://example.test/api").request_bytes("/v1/completions", b"{}", {"Authorization": "x"})
    assert data.startswith(b"POST /api/v1/completions HTTP/1.1\r\nHost: example.test\r\n")
    assert b"Content-Length: 2\r\n" in data and b"Authorization: x\r\n" in data and data.endswith(b"\r\n\r\n{}")


async def _serve(handler: Any) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_request_to_a_silent_server_times_out() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async def go() -> Response:
        server, port = await _serve(silent)
        async with server:
            pool = Pool(Target.parse(f"http://127.0.0.1:{port}"))
            resp = await pool.request(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", timeout_s=0.3)
            pool.close()
            return resp

    assert "timeout: no complete response within 0.3 s" in asyncio.run(go()).error


def test_idle_connection_closed_by_the_server_is_retried_on_a_fresh_one() -> None:
    body = sse(completion("ok"))
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    async def one_shot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()
        writer.close()  # keep-alive promised, but the server closes anyway

    async def go() -> list[Response]:
        server, port = await _serve(one_shot)
        async with server:
            pool = Pool(Target.parse(f"http://127.0.0.1:{port}"))
            request = b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"
            first = await pool.request(request, 2.0)
            await asyncio.sleep(0.05)
            second = await pool.request(request, 2.0)
            pool.close()
            return [first, second]

    for resp in asyncio.run(go()):
        assert not resp.error and b"".join(p for _, p in resp.pieces) == body


def test_connection_refused_is_an_error_not_an_exception() -> None:
    async def go() -> Response:
        pool = Pool(Target.parse("http://127.0.0.1:9"))
        return await pool.request(b"POST / HTTP/1.1\r\n\r\n", 1.0)

    assert asyncio.run(go()).error.startswith("connect failed")
