"""Fake servers in processes of their own, for self-tests whose timing must not share a GIL with the client.

``ServerProcess.fake_engine(config, log)`` runs :mod:`pytest_dsbench.testing.fake_engine` (its stdout, e.g.
the decode-throughput lines, goes to ``log``); ``ServerProcess.fast_stream(...)`` runs
:mod:`pytest_dsbench.testing.fast_stream_server`. Both wait for the server to answer and are stopped by their
pid.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A server subprocess on a free loopback port; a context manager."""

    def __init__(self, args: list[str], log: Path, health: str, port: int) -> None:
        self.args = args
        self.log = log
        self.health = health
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def fake_engine(cls, config: dict[str, Any], log: Path) -> ServerProcess:
        port = free_port()
        args = [
            sys.executable,
            "-m",
            "pytest_dsbench.testing.fake_engine",
            "--port",
            str(port),
            "--fake-config",
            json.dumps(config),
        ]
        return cls(args, log, "/health", port)

    @classmethod
    def fast_stream(cls, log: Path, ttft_ms: float = 0.0, itl_ms: float = 0.0, cpu: int | None = None) -> ServerProcess:
        port = free_port()
        args = [
            sys.executable,
            "-m",
            "pytest_dsbench.testing.fast_stream_server",
            "--port",
            str(port),
            "--ttft-ms",
            str(ttft_ms),
            "--itl-ms",
            str(itl_ms),
        ]
        if cpu is not None:
            args += ["--cpu", str(cpu)]
        return cls(args, log, "/health", port)

    def start(self, timeout_s: float = 30.0) -> ServerProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-500:]}")
            try:
                if httpx.get(self.base_url + self.health, timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server on port {self.port} not healthy within {timeout_s:g} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
