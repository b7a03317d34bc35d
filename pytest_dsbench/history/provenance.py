"""Provenance of a run: what was measured, on what, with which code, so two runs can be compared honestly.

Recorded in every stored run (and the JSON/HTML reports): engine and version, model, hardware profile (with
the profile file's hash), launch arguments, suite version, git commit of the suite checkout, host, time and
the pytest command line. API keys are removed before anything is stored.

Two runs are *comparable* when engine, hardware profile and model agree; the workload is checked per result.
The engine version is recorded but deliberately not required to match: an upgrade is what a comparison is for.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
import subprocess
from pathlib import Path
from typing import Any

from pytest_dsbench import __version__
from pytest_dsbench._http import redact
from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.thresholds import HardwareProfile

GIT_TIMEOUT_S = 5.0
_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")

#: Provenance fields that must agree for two runs to be compared (unless --dsbench-force-compare).
IDENTITY_FIELDS = ("engine", "hw", "model")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_info(cwd: Path) -> dict[str, Any]:
    """Commit, branch and dirtiness of the checkout at ``cwd`` (``unversioned`` outside git), with
    timeouts."""
    sha = _git(["rev-parse", "HEAD"], cwd)
    if not sha:
        return {"id": "unversioned", "dirty": False, "branch": None, "time": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return {
        "id": sha,
        "dirty": bool(status),
        "branch": _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd),
        "time": _git(["show", "-s", "--format=%cI", "HEAD"], cwd),
    }


def _file_sha256(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _redact_env(env: dict[str, str]) -> dict[str, str]:
    return {k: ("***" if _is_secret_name(k) else v) for k, v in env.items()}


def _redact_args(args: list[str] | tuple[str, ...], secrets: list[str | None]) -> list[str]:
    out: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        flag, sep, _value = arg.partition("=")
        if flag in ("--api-key", "--dsbench-api-key") and not sep:
            hide_next = True
            out.append(arg)
        elif flag in ("--api-key", "--dsbench-api-key"):
            out.append(f"{flag}=***")
        elif sep and not flag.startswith("-") and _is_secret_name(flag):
            out.append(f"{flag}=***")  # an environment assignment such as HF_TOKEN=... (--engine-env HF_TOKEN=...)
        else:
            out.append(redact(arg, secrets))
    return out


def _is_secret_name(name: str) -> bool:
    return any(word in name.upper() for word in _SECRET_WORDS)


def hw_section(options: DsbenchOptions, profile: HardwareProfile) -> dict[str, Any]:
    """The hardware profile as stored: its name, deployment, device count and the file's hash."""
    return {
        "name": options.hw,
        "profile": profile.hardware.name,
        "deployment": profile.deployment_name,
        "accelerator": profile.hardware.accelerator,
        "devices": profile.hardware.devices,
        "path": str(profile.path) if profile.path else None,
        "sha256": _file_sha256(profile.path),
    }


def collect(
    options: DsbenchOptions,
    profile: HardwareProfile,
    engine: EngineInfo | None,
    *,
    invocation_args: tuple[str, ...] = (),
    cwd: Path | None = None,
    now: _dt.datetime | None = None,
) -> dict[str, Any]:
    """Everything recorded about a run; ``engine`` is None when no test used the engine."""
    secret_env = {k: v for k, v in options.engine_env.items() if _is_secret_name(k)}
    secrets: list[str | None] = [options.api_key, *secret_env.values()]
    when = (now or _dt.datetime.now(_dt.UTC)).astimezone(_dt.UTC)
    identity: dict[str, Any] = dict(engine.identity()) if engine else {"engine": options.engine}
    launch = list(engine.launch_command) if engine else []
    return {
        **identity,
        "engine": identity.get("engine", options.engine),
        "engine_version": identity.get("engine_version"),
        "model": identity.get("model") or options.served_model_name or options.model,
        "hw": options.hw,
        "hw_profile": hw_section(options, profile),
        "launch_command": _redact_args(launch, secrets),
        "engine_args": _redact_args(list(options.engine_args), secrets),
        "engine_env": _redact_env(
            {**profile.launch(options.engine).env, **profile.deployment.engine_env, **options.engine_env}
        ),
        "load_generator": options.load_generator,
        "suite_version": __version__,
        "git": git_info(cwd or Path.cwd()),
        "time": when.isoformat(timespec="seconds"),
        "host": platform.node(),
        "python": platform.python_version(),
        "pytest_args": _redact_args(list(invocation_args), secrets),
    }


def mismatches(
    baseline: dict[str, Any], current: dict[str, Any], fields: tuple[str, ...] = IDENTITY_FIELDS
) -> list[str]:
    """Human-readable differences in the identity fields, e.g. ``engine: sglang (baseline) vs vllm (this
    run)``.

    A field missing on either side (e.g. the model when no test used the engine) is not a mismatch.
    """
    out = []
    for name in fields:
        old, new = baseline.get(name), current.get(name)
        if old is not None and new is not None and str(old) != str(new):
            out.append(f"{name} {old!s} (baseline) vs {new!s} (this run)")
    return out


def workload_diff(baseline: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two workload dicts, e.g. ``num_prompts 64 -> 32``."""
    keys = sorted(set(baseline) | set(current))
    return [
        f"{k} {baseline.get(k, '(unset)')!s} -> {current.get(k, '(unset)')!s}"
        for k in keys
        if baseline.get(k) != current.get(k)
    ]
