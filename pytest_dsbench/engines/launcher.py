"""Start mode: run an engine in its own process group, wait until it serves, and stop all of it.

The engine's stdout and stderr go to a log file in the artifacts folder; a server that exits or never becomes
healthy is reported with the last lines of that log. Teardown signals the whole process group (vLLM's engine
core, SGLang's schedulers and LMDeploy's Ray workers are children of the server), so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx

from pytest_dsbench._http import auth_headers, join, redact
from pytest_dsbench.errors import EngineStartError

LOG_TAIL_LINES = 40
EXIT_GRACE_S = 30.0
"""How long a server that refuses connections may take to exit before a failure is blamed on it (SGLang sleeps
5 s for crash diagnostics, then kills its process tree)."""
_STOP_GRACE_S = 15.0
_RUNNING: set[EngineProcess] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file (empty when it does not exist)."""
    try:
        data = path.read_bytes()[-256 * 1024 :]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


class EngineProcess:
    """One launched engine server: its process group, its log and its base URL."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        base_url: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        health_paths: Sequence[str] = ("/health", "/v1/models"),
        api_key: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.command = list(command)
        self.base_url = base_url
        self.log_path = log_path
        self.env = dict(env or {})
        self.health_paths = tuple(health_paths)
        self.api_key = api_key
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the command in a new session (its own process group), output to the log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        with self.log_path.open("ab") as log:
            log.write(f"$ {redact(' '.join(self.command), [self.api_key])}\n".encode())
            log.flush()
            try:
                self.popen = subprocess.Popen(
                    self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=env, cwd=self.cwd, start_new_session=True,
                )
            except OSError as exc:
                raise EngineStartError(f"could not run {self.command[0]!r}: {exc.strerror}") from None
        _RUNNING.add(self)

    def wait_healthy(self, timeout_s: float) -> None:
        """Poll the health paths until all answer 200; raise with the log tail on exit or timeout."""
        deadline = time.monotonic() + timeout_s
        headers = auth_headers(self.api_key)
        with httpx.Client(timeout=httpx.Timeout(5.0), headers=headers) as client:
            while True:
                code = self.returncode()
                if code is not None:
                    raise EngineStartError(
                        f"engine exited (code {code}) before it became healthy. Last lines of {self.log_path}:\n"
                        f"{log_tail(self.log_path)}"
                    )
                if all(self._answers(client, path) for path in self.health_paths):
                    return
                if time.monotonic() > deadline:
                    self.stop()
                    raise EngineStartError(
                        f"engine did not become healthy within {timeout_s:g} s "
                        f"(polled {', '.join(self.health_paths)} at {self.base_url}; raise it with "
                        f"--engine-startup-timeout). Last lines of {self.log_path}:\n{log_tail(self.log_path)}"
                    )
                time.sleep(0.5)

    def _answers(self, client: httpx.Client, path: str) -> bool:
        try:
            return client.get(join(self.base_url, path)).status_code == 200
        except httpx.HTTPError:
            return False

    def returncode(self) -> int | None:
        """The exit code, or None while the server runs."""
        return None if self.popen is None else self.popen.poll()

    def exit_message(self, during: str | None = None) -> str | None:
        """The one message every test gets once the server exited (``during``: what was running when it did),
        or None while it runs."""
        code = self.returncode()
        if code is None:
            return None
        when = f" during {during}" if during else ""
        return (
            f"engine exited (code {code}){when}; remaining tests cannot run. Last lines of {self.log_path}:\n"
            f"{log_tail(self.log_path, 15)}"
        )

    def refuses_connections(self, timeout_s: float = 2.0) -> bool:
        """True when the server's port refuses a TCP connection: the server is gone or going, though its process
        may still be alive (SGLang waits 5 s for crash diagnostics before it kills its own process tree)."""
        url = httpx.URL(self.base_url)
        try:
            with socket.create_connection((url.host, url.port or 80), timeout=timeout_s):
                return False
        except ConnectionRefusedError:
            return True
        except OSError:
            return False  # a timeout or another error says nothing about whether the server exited

    def exited_within(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the server process to exit; True when it has."""
        if self.popen is None:
            return False
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout_s)
        return self.popen.poll() is not None

    @property
    def pgid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    def stop(self) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after a grace period."""
        _RUNNING.discard(self)
        if self.popen is None:
            return
        pgid = self.popen.pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        while time.monotonic() < deadline and _group_alive(pgid):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=0.2)
            if self.popen.poll() is not None and not _group_alive(pgid):
                break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)

    def __enter__(self) -> EngineProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_all() -> None:
    """Safety net at session end: stop every engine this process started and has not stopped."""
    for proc in list(_RUNNING):
        proc.stop()


@contextlib.contextmanager
def running(
    command: Sequence[str], *, base_url: str, log_path: Path, timeout_s: float,
    env: Mapping[str, str] | None = None, health_paths: Sequence[str] = ("/health", "/v1/models"),
) -> Iterator[EngineProcess]:
    """Start an engine, wait until healthy, yield it, and always stop its process group."""
    proc = EngineProcess(command, base_url=base_url, log_path=log_path, env=env, health_paths=health_paths)
    proc.start()
    try:
        proc.wait_healthy(timeout_s)
        yield proc
    finally:
        proc.stop()
