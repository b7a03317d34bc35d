"""A minimal, fast OpenAI-completions streaming server that records when it sent every event.

For measuring load *clients*, not engines: it answers ``POST .../completions`` with ``max_tokens`` SSE events
(chunked transfer encoding, keep-alive), ``ttft_ms`` before the first and ``itl_ms`` between the others (0: as
fast as the loop can), then ``[DONE]``. Each request's first text starts with ``r<id>`` so a client's record
can be matched to the server's send times, which ``GET /send_times`` returns (``time.perf_counter()``, i.e.
CLOCK_MONOTONIC, comparable with a client's on the same host). Nothing else of the API is implemented.

    python -m pytest_dsbench.testing.fast_stream_server --port 8100 --ttft-ms 20 --itl-ms 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

_CHUNK_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def _chunk(payload: bytes) -> bytes:
    return f"{len(payload):x}\r\n".encode() + payload + b"\r\n"


def _event(text: str, finish: str | None = None) -> bytes:
    body = {
        "id": "cmpl-fast",
        "object": "text_completion",
        "created": 0,
        "model": "fast",
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
    }
    return _chunk(b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n")


_TOKEN = _event("tok ")


@dataclass
class Sent:
    """One request as the server saw it."""

    id: int
    arrival: float
    sends: list[float] = field(default_factory=list)


@dataclass
class ServerConfig:
    ttft_ms: float = 0.0
    itl_ms: float = 0.0
    yield_every: int = 16
    record: bool = True


class _Handler(asyncio.Protocol):
    def __init__(self, server: FastStreamServer) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        arrival = perf_counter()
        self.buf += data
        while not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            method, path = [*head.split(" ", 2), "", ""][:2]
            self.busy = True
            asyncio.get_running_loop().create_task(self.server.handle(self, method, path, body, arrival))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def done(self) -> None:
        self.busy = False
        if self.buf and self.transport is not None:
            self.data_received(b"")


class FastStreamServer:
    """The server state: configuration and every request's send times."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.requests: list[Sent] = []

    def _reply(self, handler: _Handler, status: str, body: bytes) -> None:
        if handler.transport is not None:
            handler.transport.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )

    async def handle(self, handler: _Handler, method: str, path: str, body: bytes, arrival: float) -> None:
        try:
            if method == "GET" and path.startswith("/send_times"):
                data = [{"id": r.id, "arrival": r.arrival, "sends": r.sends} for r in self.requests]
                self._reply(handler, "200 OK", json.dumps({"requests": data}).encode())
            elif method == "POST" and path.startswith("/reset"):
                self.requests.clear()
                self._reply(handler, "200 OK", b"{}")
            elif method == "POST" and path.endswith("completions"):
                await self._stream(handler, json.loads(body or b"{}"), arrival)
            elif method == "GET" and (path.startswith("/health") or path.startswith("/v1/models")):
                self._reply(handler, "200 OK", b'{"object":"list","data":[{"id":"fast","object":"model"}]}')
            else:
                self._reply(handler, "404 Not Found", b'{"error":"not found"}')
        finally:
            handler.done()

    async def _stream(self, handler: _Handler, request: dict[str, Any], arrival: float) -> None:
        n = max(1, int(request.get("max_tokens") or request.get("max_completion_tokens") or 16))
        sent = Sent(len(self.requests), arrival)
        if self.config.record:
            self.requests.append(sent)
        cfg = self.config
        transport = handler.transport
        if transport is None:
            return
        transport.write(_CHUNK_HEAD)
        if cfg.ttft_ms > 0:
            await asyncio.sleep(max(0.0, arrival + cfg.ttft_ms / 1000 - perf_counter()))
        first = _event(f"r{sent.id} ")
        for i in range(n):
            if transport.is_closing():
                return
            transport.write(first if i == 0 else _TOKEN)
            sent.sends.append(perf_counter())
            if i + 1 < n:
                if cfg.itl_ms > 0:
                    await asyncio.sleep(cfg.itl_ms / 1000)
                elif (i + 1) % cfg.yield_every == 0:
                    await asyncio.sleep(0)
        transport.write(_event("", "length"))
        if (request.get("stream_options") or {}).get("include_usage"):
            usage = {
                "id": "cmpl-fast",
                "object": "text_completion",
                "created": 0,
                "model": "fast",
                "choices": [],
                "usage": {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1},
            }
            transport.write(_chunk(b"data: " + json.dumps(usage).encode() + b"\n\n"))
        transport.write(_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")


async def serve(host: str, port: int, config: ServerConfig, ready: asyncio.Event | None = None) -> None:
    loop = asyncio.get_running_loop()
    server_state = FastStreamServer(config)
    server = await loop.create_server(lambda: _Handler(server_state), host, port, backlog=4096)
    print(f"fast stream server on {host}:{server.sockets[0].getsockname()[1]} {config}", flush=True)
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--itl-ms", type=float, default=0.0)
    parser.add_argument("--cpu", type=int, default=None, help="pin the server to this CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    config = ServerConfig(ttft_ms=args.ttft_ms, itl_ms=args.itl_ms)
    try:
        import uvloop

        uvloop.run(serve(args.host, args.port, config))
    except ImportError:
        asyncio.run(serve(args.host, args.port, config))


if __name__ == "__main__":
    main()
