"""The one way an engine is launched: the session's engine under test and the EPLB tests' control engines.

:func:`launch_engine` puts together what a launch needs (the adapter's command for the profile's deployment,
the profile's and the user's environment, the EPLB routing patch's settings, the API key) and starts it as an
:class:`~pytest_dsbench.engines.launcher.EngineProcess` (its own process group, its log file). Waiting for
health is the caller's (a test of a patch that must refuse to start waits for the failure).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_dsbench.engines.adapters import get_adapter
from pytest_dsbench.engines.command import LaunchRequest
from pytest_dsbench.engines.launcher import EngineProcess, free_port
from pytest_dsbench.thresholds import HardwareProfile


@dataclass(frozen=True)
class EplbLaunch:
    """The EPLB routing patch a launch installs (:func:`pytest_dsbench.eplb.launch.eplb_launch_settings`)."""

    mode: str
    ranks: int | None
    """EP ranks the patch balances over; None = the engine's EP size."""
    counts_path: Path
    """The routing counter's file (stale shards are removed at launch)."""


def url_host(host: str) -> str:
    """The address a client reaches an engine bound to ``host`` at (a wildcard bind: loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def launch_engine(
    engine: str,
    hw: HardwareProfile,
    *,
    model: str,
    served_model_name: str,
    log_path: Path,
    on_cpu: bool,
    python: str | None = None,
    host: str = "127.0.0.1",
    engine_args: Sequence[str] = (),
    engine_env: Mapping[str, str] | None = None,
    api_key: str | None = None,
    eplb: EplbLaunch | None = None,
    env_overrides: Mapping[str, str] | None = None,
) -> EngineProcess:
    """Start ``engine`` serving ``model`` with ``hw``'s deployment on a free port; the process is running, not
    yet healthy (call ``wait_healthy``).

    The command is the adapter's (its flag table) followed by ``engine_args``, the EPLB patch's arguments and
    ``--api-key``. The environment (on top of the suite's own) is, later entries winning: the
    adapter's ``launch_env`` (only on a loopback bind), the profile's ``[engines.<engine>] env``, the deployment's
    ``engine_env``, ``engine_env`` (``--engine-env``), the EPLB
    patch's variables, then ``env_overrides`` (an empty value hides an inherited variable from the engine).
    ``on_cpu``: the host has no GPU (GPU-only flags are left out).
    """
    adapter = get_adapter(engine)
    loopback = host in ("127.0.0.1", "localhost", "::1")  # an adapter's launch_env may open dev-only endpoints
    env = {**(adapter.launch_env if loopback else {}), **hw.launch(engine).env, **hw.deployment.engine_env,
           **(engine_env or {})}
    args = list(engine_args)
    if eplb is not None:
        from pytest_dsbench.eplb.launch import eplb_launch_settings

        eplb_env, eplb_args = eplb_launch_settings(engine, eplb.mode, eplb.ranks, eplb.counts_path)
        env.update(eplb_env)
        args += eplb_args
    env.update(env_overrides or {})
    if api_key:
        args += ["--api-key", api_key]
    port = free_port(host)
    request = LaunchRequest(
        python=python or sys.executable, model=model, served_model_name=served_model_name, host=host, port=port,
        hw=hw, extra_args=tuple(args), on_cpu=on_cpu,
    )
    process = EngineProcess(
        adapter.launch_command(request), base_url=f"http://{url_host(host)}:{port}", log_path=log_path, env=env,
        health_paths=(adapter.health_path, "/v1/models"), api_key=api_key,
    )
    process.start()
    return process
