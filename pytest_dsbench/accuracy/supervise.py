"""Supervises the EvalScope child process: a wall-clock limit, its own process group, and an engine watchdog.

EvalScope retries a failed request several times with pauses before it gives a sample up, so against an engine
that died it would spend minutes per remaining sample. While the child runs, the watchdog asks the engine's
``/v1/models`` every few seconds; when the engine stops answering several times in a row the child is stopped
and the test fails at once with the reason, instead of hanging until the run's time limit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from pytest_dsbench._http import auth_headers, join, redact
from pytest_dsbench.accuracy.errors import AccuracyError

KILL_GRACE_S = 10.0
WATCH_INTERVAL_S = 5.0
WATCH_PROBE_TIMEOUT_S = 10.0
WATCH_FAILURES = 3


@dataclass
class EngineWatch:
    """Probes the engine while EvalScope runs; it has died when ``failures`` probes in a row fail."""

    base_url: str
    api_key: str | None
    interval_s: float = WATCH_INTERVAL_S
    failures: int = WATCH_FAILURES
    probe_timeout_s: float = WATCH_PROBE_TIMEOUT_S

    def probe(self) -> str | None:
        """None when ``GET /v1/models`` answers 200, else why not."""
        try:
            timeout = httpx.Timeout(self.probe_timeout_s)
            with httpx.Client(timeout=timeout, headers=auth_headers(self.api_key)) as client:
                response = client.get(join(self.base_url, "/v1/models"))
        except httpx.HTTPError as exc:
            return redact(f"{type(exc).__name__}: {exc}", [self.api_key])[:200]
        return None if response.status_code == 200 else f"HTTP {response.status_code}"


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the child's process group, then SIGKILL it if it is still there after the grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(KILL_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def run_child(command: Sequence[str], *, env: dict[str, str], cwd: Path, log_path: Path, timeout_s: float,
              watch: EngineWatch | None, what: str) -> int:
    """Run ``command`` with output to ``log_path``; its exit status, or an :class:`AccuracyError`."""
    deadline = time.monotonic() + timeout_s
    with log_path.open("wb") as log:
        try:
            process = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, env=env, cwd=cwd, start_new_session=True)
        except OSError as exc:
            raise AccuracyError(f"cannot start EvalScope with {command[0]}: {exc.strerror or exc}") from None
        failed = 0
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    stop_group(process)
                    raise AccuracyError(f"EvalScope did not finish {what} within {timeout_s:g} s "
                                        f"(--dsbench-eval-timeout); log: {log_path}")
                interval = watch.interval_s if watch is not None else remaining
                try:
                    return process.wait(min(interval, remaining))
                except subprocess.TimeoutExpired:
                    pass
                if watch is None:
                    continue
                reason = watch.probe()
                failed = failed + 1 if reason else 0
                if reason and failed >= watch.failures:
                    stop_group(process)
                    raise AccuracyError(
                        f"the engine at {watch.base_url} stopped answering during the accuracy run on {what} "
                        f"(GET /v1/models: {reason}, {failed} times in a row); EvalScope was stopped; "
                        f"log: {log_path}")
        except BaseException:
            if process.poll() is None:
                stop_group(process)
            raise
