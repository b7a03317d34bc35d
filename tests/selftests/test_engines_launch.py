"""launch_engine, the one launch of the session's engine and the EPLB control engines: the command and the
environment it hands to the engine process (pinned: what the session built before it had a launch function)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_dsbench import thresholds
from pytest_dsbench.engines import launch
from pytest_dsbench.engines.launch import EplbLaunch, launch_engine
from pytest_dsbench.engines.launcher import EngineProcess
from pytest_dsbench.engines.lmdeploy.eplb import SHIM_DIR

PORT = 41234


@pytest.fixture(autouse=True)
def no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Build the launch, start nothing, on a known port; no plugin allowlist or PYTHONPATH inherited."""
    monkeypatch.setattr(EngineProcess, "start", lambda self: None)
    monkeypatch.setattr(launch, "free_port", lambda host="127.0.0.1": PORT)
    for name in ("VLLM_PLUGINS", "SGLANG_PLUGINS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYTHONPATH", "/existing")


def test_the_embedded_engine_gets_the_cpu_profiles_flags_and_environment(tmp_path: Path) -> None:
    process = launch_engine(
        "vllm", thresholds.load("cpu"), model="/fixtures/tiny-r1", served_model_name="tiny-r1",
        log_path=tmp_path / "engine-vllm.log", on_cpu=True, python="/venv/bin/python",
    )
    assert process.command == [
        "/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/fixtures/tiny-r1",
        "--served-model-name", "tiny-r1", "--host", "127.0.0.1", "--port", str(PORT), "--max-model-len", "2048",
        "--reasoning-parser", "deepseek_r1", "--max-num-seqs", "32", "--enforce-eager", "--dtype", "bfloat16",
        "--compilation-config", '{"custom_ops": ["-rotary_embedding"]}',
        "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}',
        "--enable-auto-tool-choice", "--tool-call-parser", "deepseek_v3",
    ]
    assert process.env == {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
                           "VLLM_LOG_STATS_INTERVAL": "1", "VLLM_SERVER_DEV_MODE": "1"}
    assert (process.base_url, process.health_paths, process.log_path) == (
        f"http://127.0.0.1:{PORT}", ("/health", "/v1/models"), tmp_path / "engine-vllm.log")


def test_user_args_then_the_patch_then_the_api_key_end_the_command(tmp_path: Path) -> None:
    process = launch_engine(
        "vllm", thresholds.load("gpu1"), model="/models/DeepSeek-R1", served_model_name="DeepSeek-R1",
        log_path=tmp_path / "engine.log", on_cpu=True, python="/venv/bin/python", host="0.0.0.0",
        engine_args=("--enforce-eager",), engine_env={"A": "1"}, api_key="sk-secret",
        eplb=EplbLaunch(mode="reference", ranks=4, counts_path=tmp_path / "eplb-counts.json"),
    )
    assert process.command == [
        "/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server", "--model", "/models/DeepSeek-R1",
        "--served-model-name", "DeepSeek-R1", "--host", "0.0.0.0", "--port", str(PORT), "--max-model-len", "2048",
        "--reasoning-parser", "deepseek_r1", "--max-num-seqs", "128", "--dtype", "bfloat16", "--attention-config",
        '{"flash_attn_version": 2}', "--structured-outputs-config",
        '{"backend": "xgrammar", "disable_any_whitespace": true}', "--enable-auto-tool-choice", "--tool-call-parser",
        "deepseek_v3", "--enforce-eager", "--api-key", "sk-secret",
    ]
    assert process.env == {
        "VLLM_LOG_STATS_INTERVAL": "1", "A": "1", "DSBENCH_EPLB_MODE": "reference",
        "DSBENCH_EPLB_COUNTS_PATH": str((tmp_path / "eplb-counts.json").resolve()), "DSBENCH_EPLB_RANKS": "4",
        "VLLM_MOE_ROUTING_SIMULATION_STRATEGY": "dsbench_eplb_reference",
    }
    assert process.base_url == f"http://127.0.0.1:{PORT}", "a wildcard bind is reached on loopback"
    assert "VLLM_SERVER_DEV_MODE" not in process.env, "dev-only endpoints are never opened on a wildcard bind"
    assert process.api_key == "sk-secret"


def test_lmdeploy_with_a_patch_puts_the_shim_ahead_of_the_inherited_pythonpath(tmp_path: Path) -> None:
    process = launch_engine(
        "lmdeploy", thresholds.load("h800/dp32-ep32"), model="/models/R1", served_model_name="R1",
        log_path=tmp_path / "engine.log", on_cpu=False,
        eplb=EplbLaunch(mode="observe", ranks=32, counts_path=tmp_path / "c.json"),
    )
    assert process.env["PYTHONPATH"] == f"{SHIM_DIR}:/existing"
    assert process.command[5:7] == ["/models/R1", "--model-name"]


def test_an_empty_override_hides_a_variable_the_patch_set(tmp_path: Path) -> None:
    process = launch_engine(
        "vllm", thresholds.load("cpu"), model="/m", served_model_name="m", log_path=tmp_path / "e.log",
        on_cpu=True, eplb=EplbLaunch(mode="balanced", ranks=None, counts_path=tmp_path / "c.json"),
        env_overrides={"VLLM_MOE_ROUTING_SIMULATION_STRATEGY": ""},
    )
    assert process.env["VLLM_MOE_ROUTING_SIMULATION_STRATEGY"] == ""
    assert "DSBENCH_EPLB_RANKS" not in process.env


def test_launch_starts_the_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[EngineProcess] = []
    monkeypatch.setattr(EngineProcess, "start", lambda self: started.append(self))
    process = launch_engine("sglang", thresholds.load("h20"), model="/m", served_model_name="m",
                            log_path=tmp_path / "e.log", on_cpu=False)
    assert started == [process]
