"""The engine under test for one pytest session: launched by the suite (start mode) or found (attach mode)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pytest_dsbench._http import auth_headers, join, redact
from pytest_dsbench.engines.adapters import get_adapter
from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.engines.command import profile_args
from pytest_dsbench.engines.launch import EplbLaunch, launch_engine
from pytest_dsbench.engines.launcher import EXIT_GRACE_S, EngineProcess
from pytest_dsbench.errors import DsbenchUsageError, EngineStartError, MissingExtra
from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.packaged import data_dir
from pytest_dsbench.thresholds import HardwareProfile

EMBEDDED_MODEL_NAME = "tiny-r1"
ATTACH_PROBE_TIMEOUT_S = 8.0
EMBEDDED_EPLB_RANKS = 4


def embedded_model_dir() -> Path:
    """The fixture model's folder: the copy in the wheel or the source checkout's ``fixtures/tiny-r1``."""
    return data_dir("tiny-r1")


def has_gpu() -> bool:
    """True when an NVIDIA GPU is visible (the embedded CPU engine is for machines without one)."""
    return shutil.which("nvidia-smi") is not None or Path("/dev/nvidia0").exists()


def _get_json(client: httpx.Client, url: str) -> Any:
    response = client.get(url)
    response.raise_for_status()
    return response.json()


def served_models(base_url: str, api_key: str | None, timeout_s: float) -> list[dict[str, Any]]:
    """The ``data`` list of ``GET /v1/models``."""
    with httpx.Client(timeout=httpx.Timeout(timeout_s), headers=auth_headers(api_key)) as client:
        payload = _get_json(client, join(base_url, "/v1/models"))
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise EngineStartError(f"{base_url}/v1/models did not return an OpenAI model list: {str(payload)[:200]}")
    return [m for m in data if isinstance(m, dict)]


def probe_version(base_url: str, api_key: str | None, timeout_s: float) -> str | None:
    """The engine version from its own endpoint (vLLM ``/version``, SGLang ``/get_server_info``)."""
    with httpx.Client(timeout=httpx.Timeout(timeout_s), headers=auth_headers(api_key)) as client:
        for path in ("/version", "/get_server_info", "/server_info"):
            try:
                payload = _get_json(client, join(base_url, path))
            except (httpx.HTTPError, ValueError):
                continue
            if isinstance(payload, dict) and isinstance(payload.get("version"), str):
                return str(payload["version"])
    return None


def check_reachable(base_url: str, api_key: str | None, timeout_s: float) -> list[dict[str, Any]]:
    """Attach mode: the server answers ``/v1/models`` in time, or a one-line usage error says why not."""
    try:
        return served_models(base_url, api_key, min(timeout_s, ATTACH_PROBE_TIMEOUT_S))
    except httpx.HTTPStatusError as exc:
        hint = " (pass --api-key or set DSBENCH_API_KEY)" if exc.response.status_code in (401, 403) else ""
        raise DsbenchUsageError(
            f"--base-url {base_url}: GET /v1/models answered HTTP {exc.response.status_code}{hint}."
        ) from None
    except httpx.HTTPError as exc:
        reason = type(exc).__name__
        raise DsbenchUsageError(
            f"cannot reach --base-url {base_url} ({reason}: {redact(str(exc), [api_key]) or 'no answer'}). "
            "Check the address and that the server is up, or drop --base-url to let the suite launch one."
        ) from None
    except EngineStartError as exc:
        raise DsbenchUsageError(f"--base-url {base_url}: {exc}") from None


def _pick_model(models: list[dict[str, Any]], wanted: str | None, base_url: str) -> dict[str, Any]:
    ids = [str(m.get("id")) for m in models]
    if not models:
        raise DsbenchUsageError(f"{base_url}/v1/models lists no model; is the server still loading?")
    if wanted is None:
        return models[0]
    for model in models:
        if wanted in (model.get("id"), model.get("root")):
            return model
    raise DsbenchUsageError(f"model {wanted!r} is not served at {base_url}. Served models: {', '.join(ids)}.")


def _require_engine_package(module: str, extra: str) -> None:
    """Start mode with this interpreter: a missing engine package is a usage error naming the extra, not a log
    tail ending in ``No module named ...`` after the startup wait."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise DsbenchUsageError(
            f"{MissingExtra(extra, module, f'launching --engine {module}')} (or --engine-python PATH for an "
            "interpreter that has it, or --base-url URL to attach to a running server)"
        )


@dataclass
class EngineSession:
    """The engine of this session, plus the process when the suite launched it."""

    options: DsbenchOptions
    hw: HardwareProfile
    artifacts_dir: Path
    info: EngineInfo | None = None
    process: EngineProcess | None = None
    attach_models: list[dict[str, Any]] = field(default_factory=list)

    def attach_check(self) -> None:
        """Attach mode: fail the run at once, with a usage error, when the server cannot be reached."""
        assert self.options.base_url is not None
        self.attach_models = check_reachable(
            self.options.base_url, self.options.api_key, self.options.request_timeout_s
        )

    def ensure(self) -> EngineInfo:
        """Start or attach on first use; later calls return the same engine."""
        if self.info is None:
            self.info = self._attach() if self.options.attach else self._start()
        return self.info

    # -- attach ------------------------------------------------------------------------------------------------
    def _attach(self) -> EngineInfo:
        opts = self.options
        assert opts.base_url is not None
        if opts.eplb != "off":
            raise DsbenchUsageError("--eplb installs a routing patch when the suite launches the engine; "
                                    "it cannot be used with --base-url.")
        if not self.attach_models:
            self.attach_check()
        model = _pick_model(self.attach_models, opts.served_model_name or opts.model, opts.base_url)
        adapter = get_adapter(opts.engine)
        version = probe_version(opts.base_url, opts.api_key, opts.request_timeout_s) or "unknown"
        model_path = opts.model if opts.model and Path(opts.model).is_dir() else None
        return EngineInfo(
            name=opts.engine, version=version, base_url=opts.base_url, model=str(model["id"]),
            model_path=model_path, tokenizer_path=opts.tokenizer or model_path,
            max_model_len=_int_or_none(model.get("max_model_len")) or self.hw.deployment.max_model_len,
            behaviour=adapter.behaviour.for_version(version), mode="attach", log_paths=opts.engine_logs,
            api_key=opts.api_key,
        )

    # -- start ---------------------------------------------------------------------------------------------------
    def _start(self) -> EngineInfo:
        opts = self.options
        adapter = get_adapter(opts.engine)
        on_cpu = not has_gpu()
        model = opts.model
        if model is None:
            if not adapter.serves_embedded_model:
                raise DsbenchUsageError(
                    f"--engine {opts.engine} needs --model PATH (or --base-url): the embedded tiny model is "
                    "served by vLLM's CPU build only."
                )
            model_dir = embedded_model_dir()
            if not (model_dir / "config.json").is_file():
                raise DsbenchUsageError(f"the embedded model is missing ({model_dir}); pass --model PATH.")
            model = str(model_dir)
        served = opts.served_model_name or (EMBEDDED_MODEL_NAME if opts.model is None else Path(model).name)
        python = opts.engine_python or sys.executable
        if opts.engine_python is None:
            _require_engine_package(adapter.name, adapter.extra)
        eplb: EplbLaunch | None = None
        if opts.eplb != "off":
            eplb = EplbLaunch(
                mode=opts.eplb,
                ranks=opts.eplb_ranks or (
                    self.hw.deployment.expert_parallel if self.hw.deployment.expert_parallel > 1
                    else EMBEDDED_EPLB_RANKS
                ),
                counts_path=(self.artifacts_dir / "eplb-counts.json").resolve(),
            )
        log_path = self.artifacts_dir / f"engine-{opts.engine}.log"
        process = launch_engine(
            opts.engine, self.hw, model=model, served_model_name=served, log_path=log_path, on_cpu=on_cpu,
            python=python, host=opts.engine_host, engine_args=opts.engine_args, engine_env=opts.engine_env,
            api_key=opts.api_key, eplb=eplb,
        )
        self.process = process
        process.wait_healthy(opts.engine_startup_timeout_s)
        base_url, command = process.base_url, process.command
        models = served_models(base_url, opts.api_key, opts.request_timeout_s)
        listed = _pick_model(models, served, base_url)
        version = probe_version(base_url, opts.api_key, opts.request_timeout_s) or _version_from_python(
            python, adapter.version_probe()
        )
        return EngineInfo(
            name=opts.engine, version=version, base_url=base_url, model=str(listed["id"]),
            model_path=model if Path(model).is_dir() else None,
            tokenizer_path=opts.tokenizer or (model if Path(model).is_dir() else None),
            max_model_len=_int_or_none(listed.get("max_model_len")) or self.hw.deployment.max_model_len,
            behaviour=adapter.behaviour.for_launch(profile_args(self.hw, opts.engine, opts.engine_args))
            .for_version(version), mode="start", log_paths=(log_path,),
            launch_command=tuple(redact(" ".join(command), [opts.api_key]).split(" ")), api_key=opts.api_key,
            eplb_mode=opts.eplb, eplb_counts_path=eplb.counts_path if eplb else None,
            eplb_ranks=eplb.ranks if eplb else None,
        )

    # -- liveness (start mode only: a server the suite did not launch is not the suite's to diagnose) ----------
    def exit_message(self) -> str | None:
        """The engine-exited message once the engine the suite launched has exited; None while it runs, and in
        attach mode."""
        return self.process.exit_message() if self.process is not None else None

    def died_during(self, what: str) -> str | None:
        """After a failure of ``what``: the engine-exited message naming it when the launched engine has exited,
        or refuses connections and exits within :data:`EXIT_GRACE_S`; None when it still serves (or attach mode).

        A request that fails because the server is going (its port closed, the process still writing its crash
        report) is the engine's death, not a connection error of that test."""
        process = self.process
        if process is None:
            return None
        if process.returncode() is None and not (
            process.refuses_connections() and process.exited_within(EXIT_GRACE_S)
        ):
            return None
        return process.exit_message(during=what)

    def stop(self) -> None:
        """Stop the launched engine, if any."""
        if self.process is not None:
            self.process.stop()


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _version_from_python(python: str, probe: list[str]) -> str:
    try:
        result = subprocess.run([python, *probe], capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = result.stdout.strip().splitlines()
    return lines[-1] if result.returncode == 0 and lines else "unknown"
