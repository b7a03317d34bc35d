"""A lean HTTP/1.1 streaming client on asyncio protocols: the load generator's hot path.

Why not aiohttp or httpx here: at thousands of concurrent streams the client's own per-chunk work delays every
timestamp it takes (vllm#54101, aiperf#1424, InferenceX's KNOWN_LIMITATION). This client does the minimum
while a response streams in: ``data_received`` takes ``perf_counter()`` first, undoes the chunked transfer
encoding and keeps ``(time, bytes)`` pieces. SSE framing and JSON are parsed after the request finished
(:mod:`pytest_dsbench.load.readback`), off the timing-critical path. Requests are serialised before the run
starts.

Keep-alive connections are pooled per worker; a request that finds its pooled connection closed by the server
before any response byte is retried once on a fresh connection. Every request has a deadline.
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from dataclasses import dataclass, field
from time import perf_counter
from urllib.parse import urlsplit

_HEADERS, _SIZE, _DATA, _DATA_END, _TRAILER, _LENGTH, _UNTIL_CLOSE, _DONE = range(8)
_SIZES = {b"%x" % size: size for size in range(1, 1 << 14)}
"""Chunk size lines in lower case hex, 1 byte to 16 KiB: a lookup instead of ``int(line, 16)`` per chunk."""


@dataclass
class Response:
    """What came back: status, body pieces with their arrival times, and an error (empty when none)."""

    status: int | None = None
    pieces: list[tuple[float, bytes]] = field(default_factory=list)
    error: str = ""
    headers_s: float = 0.0
    end_s: float = 0.0
    received_any: bool = False


@dataclass(frozen=True)
class Target:
    """Where requests go: host, port, TLS, and the path prefix of the server root."""

    host: str
    port: int
    tls: bool
    prefix: str

    @classmethod
    def parse(cls, base_url: str) -> Target:
        parts = urlsplit(base_url)
        tls = parts.scheme == "https"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if tls else 80)
        return cls(host, port, tls, parts.path.rstrip("/"))

    def request_bytes(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        """A complete POST request, serialised once before the run."""
        host = self.host if self.port in (80, 443) else f"{self.host}:{self.port}"
        lines = [
            f"POST {self.prefix}{path} HTTP/1.1",
            f"Host: {host}",
            "Content-Type: application/json",
            "Accept: text/event-stream",
            f"Content-Length: {len(body)}",
            "Connection: keep-alive",
        ]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses one response at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self._waiter: asyncio.Future[Response] | None = None
        self._resp = Response()
        self._state = _DONE
        self._buf = b""
        self._remaining = 0
        self._keep_alive = True

    # -- asyncio.Protocol
    # ---------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        t = perf_counter()
        if self._state == _SIZE and not self._buf:
            # The common case, kept to a few byte operations per chunk: the read starts at a chunk's size line
            # and holds whole chunks. Anything else continues in the general state machine (``_body``).
            sizes = _SIZES
            find = data.find
            n = len(data)
            i = 0
            parts: list[bytes] = []
            while (j := find(b"\r\n", i)) >= 0:
                size = sizes.get(data[i:j])
                if size is None:  # the last chunk, upper case, an extension, a bad line: the general path
                    break
                end = j + 2 + size
                if end + 2 > n:
                    break
                parts.append(data[j + 2 : end])
                i = end + 2
                if i == n:
                    self._resp.pieces.append((t, parts[0] if len(parts) == 1 else b"".join(parts)))
                    return
            self._body(t, data, i, parts)
            return
        resp = self._resp
        resp.received_any = True
        if self._state == _HEADERS:
            data = self._buf + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self._buf = data
                return
            self._buf = b""
            self._parse_headers(data[:end].decode("latin-1"))
            resp.headers_s = t
            data = data[end + 4 :]
            if self._state == _DONE:
                self._finish(t)
                return
        if self._buf:
            data = self._buf + data
            self._buf = b""
        if data:
            self._body(t, data, 0, [])

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None or self._waiter.done():
            return
        t = perf_counter()
        if self._state == _UNTIL_CLOSE:
            self._finish(t)
        else:
            reason = f"{type(exc).__name__}: {exc}" if exc else "server closed the connection mid-response"
            self._fail(t, reason if self._resp.received_any else f"connection closed before a response ({reason})")

    # -- parsing
    # ------------------------------------------------------------------------------------------------
    def _parse_headers(self, head: str) -> None:
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        try:
            self._resp.status = int(parts[1])
        except (IndexError, ValueError):
            self._fail(perf_counter(), f"bad HTTP status line {lines[0][:80]!r}")
            return
        chunked = False
        length: int | None = None
        for line in lines[1:]:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            if key == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif key == "content-length":
                length = int(value.strip() or 0)
            elif key == "connection" and "close" in value.lower():
                self._keep_alive = False
        if chunked:
            self._state = _SIZE
        elif length is not None:
            self._remaining = length
            self._state = _LENGTH if length > 0 else _DONE
        else:
            self._keep_alive = False
            self._state = _UNTIL_CLOSE

    def _body(self, t: float, buf: bytes, i: int, parts: list[bytes]) -> None:
        """Undo the transfer encoding of one network read from offset ``i`` (``parts``: its data so far); the
        read's data becomes one ``(t, bytes)`` piece."""
        n = len(buf)
        find = buf.find
        while i < n:
            state = self._state
            if state == _SIZE:  # the fast path: a whole chunk (size line, data, CRLF) in this read
                j = find(b"\r\n", i)
                if j < 0:
                    break
                try:
                    size = int(buf[i:j], 16)
                except ValueError:
                    try:
                        size = int(buf[i:j].split(b";", 1)[0], 16)  # a chunk extension
                    except ValueError:
                        self._fail(t, f"bad chunk size line {buf[i:j][:40]!r}")
                        return
                i = j + 2
                if size == 0:
                    self._state = _TRAILER
                    continue
                end = i + size
                if end + 2 <= n:
                    parts.append(buf[i:end])
                    i = end + 2
                else:
                    self._remaining = size
                    self._state = _DATA
            elif state == _DATA:
                take = min(self._remaining, n - i)
                parts.append(buf[i : i + take])
                i += take
                self._remaining -= take
                if self._remaining == 0:
                    self._state = _DATA_END
            elif state == _DATA_END:
                if n - i < 2:
                    break
                i += 2
                self._state = _SIZE
            elif state == _TRAILER:
                j = find(b"\r\n", i)
                if j < 0:
                    break
                if j == i:  # the empty line that ends a chunked body
                    self._keep(t, parts)
                    self._finish(t)
                    return
                i = j + 2  # a trailer field: skip it
            elif state == _LENGTH:
                take = min(self._remaining, n - i)
                parts.append(buf[i : i + take])
                i += take
                self._remaining -= take
                if self._remaining == 0:
                    self._keep(t, parts)
                    self._finish(t)
                    return
            elif state == _UNTIL_CLOSE:
                parts.append(buf[i:])
                i = n
            else:
                return
        self._keep(t, parts)
        if i < n:
            self._buf = buf[i:]

    def _keep(self, t: float, parts: list[bytes]) -> None:
        if parts:
            self._resp.pieces.append((t, parts[0] if len(parts) == 1 else b"".join(parts)))

    # -- request lifecycle
    # --------------------------------------------------------------------------------------
    def start(self, waiter: asyncio.Future[Response]) -> None:
        self._waiter = waiter
        self._resp = Response()
        self._state = _HEADERS
        self._buf = b""
        self._keep_alive = True

    def _finish(self, t: float) -> None:
        self._state = _DONE
        self._resp.end_s = t
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._resp)

    def _fail(self, t: float, error: str) -> None:
        self._state = _DONE
        self._keep_alive = False
        self._resp.error = error
        self._resp.end_s = t
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(self._resp)
        if self.transport is not None:
            self.transport.abort()

    def timeout(self, seconds: float) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._fail(perf_counter(), f"timeout: no complete response within {seconds:g} s")

    @property
    def reusable(self) -> bool:
        return not self.closed and self._keep_alive and self._state == _DONE and not self._resp.error


class Pool:
    """Keep-alive connections to one target, created on demand (no connection limit, like sglang)."""

    def __init__(self, target: Target, connect_timeout_s: float = 10.0) -> None:
        self.target = target
        self.connect_timeout_s = connect_timeout_s
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._ssl = _ssl.create_default_context() if target.tls else None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(_Connection, self.target.host, self.target.port, ssl=self._ssl),
            self.connect_timeout_s,
        )
        self._all.add(conn)
        return conn

    async def warm(self, count: int) -> int:
        """Open ``count`` keep-alive connections ahead of the run (set-up is not the server's latency)."""
        results = await asyncio.gather(*(self._connect() for _ in range(count)), return_exceptions=True)
        opened = [c for c in results if isinstance(c, _Connection)]
        self._idle.extend(opened)
        return len(opened)

    async def acquire(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable and conn.transport is not None and not conn.transport.is_closing():
                conn.reused = True
                return conn
        conn = await self._connect()
        conn.reused = False
        return conn

    def release(self, conn: _Connection) -> None:
        if conn.reusable:
            self._idle.append(conn)
        else:
            self._all.discard(conn)
            if conn.transport is not None:
                conn.transport.close()

    async def request(self, data: bytes, timeout_s: float) -> Response:
        """Send one serialised request and collect its response (never raises; errors are in the Response)."""
        loop = asyncio.get_running_loop()
        for attempt in range(2):
            try:
                conn = await self.acquire()
            except (TimeoutError, OSError) as exc:
                return Response(error=f"connect failed: {type(exc).__name__}: {exc}", end_s=perf_counter())
            waiter: asyncio.Future[Response] = loop.create_future()
            conn.start(waiter)
            assert conn.transport is not None
            conn.transport.write(data)
            handle = loop.call_later(timeout_s, conn.timeout, timeout_s)
            try:
                resp = await waiter
            finally:
                handle.cancel()
            self.release(conn)
            if resp.error and conn.reused and not resp.received_any and attempt == 0:
                continue  # the server closed an idle keep-alive connection: retry once on a fresh one
            return resp
        return resp

    def close(self) -> None:
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()
        self._all.clear()
