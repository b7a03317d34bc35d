"""A server that drops a keep-alive connection after an error reply (vLLM 0.20 after a 400) must not fail the
next check: the conformance client sends that request once more on a new connection, and counts it."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import httpx
import pytest

from pytest_dsbench.conformance.client import ApiClient

OK = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'
STREAM = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 14\r\n\r\ndata: [DONE]\n\n"
)
CUT = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 100\r\n\r\nabcde"
BAD = b'HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n{"ok":false}'


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lengths = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
    length = lengths[0] if lengths else 0
    while len(body) < length:
        body += conn.recv(65536)
    return head


SEEN: list[bytes] = []


@pytest.fixture
def dropping_server() -> Iterator[str]:
    """Answers /bad with 400 keeping the connection open, then resets it when the next request comes; /cut gets
    a reply cut off after 5 of its 100 body bytes."""
    SEEN.clear()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            erred = False
            while not stop.is_set():
                head = _read_request(conn)
                if not head:
                    return
                SEEN.append(head.split(b"\r\n")[0])
                if erred:  # the request after the error: reset, no reply
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if b" /cut " in head:
                    conn.sendall(CUT)
                    return
                if b" /bad " in head:
                    conn.sendall(BAD)
                    erred = True
                else:
                    conn.sendall(STREAM if b" /stream " in head else OK)

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    listener.close()


@pytest.mark.parametrize("method", ["get", "post", "stream"])
def test_a_request_on_a_connection_dropped_after_an_error_is_sent_again(dropping_server: str, method: str) -> None:
    with httpx.Client(base_url=dropping_server) as http:
        api = ApiClient(http, request_timeout_s=5)
        assert api.post("/bad", {}).status == 400
        if method == "get":
            assert api.get("/ok").status == 200
        elif method == "post":
            assert api.post("/ok", {}).status == 200
        else:
            assert api.stream("/stream", {}).status == 200
        assert api.dropped_connections == 1


def test_a_reply_cut_off_after_its_status_line_fails_and_is_never_resent(dropping_server: str) -> None:
    with httpx.Client(base_url=dropping_server) as http:
        api = ApiClient(http, request_timeout_s=5)
        with pytest.raises(httpx.RemoteProtocolError):
            api.post("/cut", {})
        assert SEEN.count(b"POST /cut HTTP/1.1") == 1 and api.dropped_connections == 0


def test_a_server_that_is_gone_still_fails_the_request(dropping_server: str) -> None:
    with httpx.Client(base_url="http://127.0.0.1:9") as http, pytest.raises(httpx.ConnectError):
        ApiClient(http, request_timeout_s=2).get("/ok")
