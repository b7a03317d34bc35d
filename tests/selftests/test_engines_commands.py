"""Launch commands: every engine's flag table, rendered by the one command builder, gives the command the
adapters built before the table existed (pinned literally), and the seeds' deployments get their flags."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_dsbench import thresholds
from pytest_dsbench.engines.adapters import get_adapter
from pytest_dsbench.engines.command import VALUE, Flag, LaunchRequest
from pytest_dsbench.engines.registry import ENGINE_NAMES
from pytest_dsbench.thresholds import HardwareProfile

PROFILES = [
    f"{name}/{dep}" if dep else name
    for name in thresholds.available(thresholds.default_dir())
    for dep in ["", *sorted(thresholds.load(name).deployments)]
]

DEPLOYMENTS: dict[str, dict[str, Any]] = {
    # every flag off: parallel sizes of 1, no batch limit, no cache fraction, no MTP
    "minimal": {"max_model_len": 4096, "max_input_len": 2048},
    # every flag on, plus the profile's, the deployment's and the user's own arguments
    "everything": {
        "tensor_parallel": 8, "pipeline_parallel": 2, "data_parallel": 4, "expert_parallel": 32,
        "max_model_len": 131072, "max_input_len": 102400, "max_batch_size": 64, "cache_ratio": 0.9, "mtp": True,
        "engine_args": ["--deployment-flag"],
    },
}

# Computed with the adapters' hand-written launch_command before the flag tables replaced them (commit a79b213).
PINNED: dict[tuple[str, str, bool], list[str]] = {
    ("vllm", "minimal", False): [
        "python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "/models/DeepSeek-R1",
        "--served-model-name", "DeepSeek-R1", "--host", "0.0.0.0", "--port", "30000", "--max-model-len", "4096",
        "--reasoning-parser", "deepseek_r1",
    ],
    ("vllm", "everything", False): [
        "python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "/models/DeepSeek-R1",
        "--served-model-name", "DeepSeek-R1", "--host", "0.0.0.0", "--port", "30000", "--max-model-len", "131072",
        "--reasoning-parser", "deepseek_r1", "--tensor-parallel-size", "8", "--pipeline-parallel-size", "2",
        "--data-parallel-size", "4", "--enable-expert-parallel", "--max-num-seqs", "64",
        "--gpu-memory-utilization", "0.9", "--speculative-config",
        '{"method": "deepseek_mtp", "num_speculative_tokens": 1}', "--hw-flag", "vllm", "--deployment-flag",
        "--user-flag",
    ],
    ("vllm", "everything", True): [
        "python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "/models/DeepSeek-R1",
        "--served-model-name", "DeepSeek-R1", "--host", "0.0.0.0", "--port", "30000", "--max-model-len", "131072",
        "--reasoning-parser", "deepseek_r1", "--tensor-parallel-size", "8", "--pipeline-parallel-size", "2",
        "--data-parallel-size", "4", "--enable-expert-parallel", "--max-num-seqs", "64", "--speculative-config",
        '{"method": "deepseek_mtp", "num_speculative_tokens": 1}', "--hw-flag", "vllm", "--deployment-flag",
        "--user-flag",
    ],
    ("sglang", "minimal", False): [
        "python3", "-m", "sglang.launch_server", "--model-path", "/models/DeepSeek-R1", "--served-model-name",
        "DeepSeek-R1", "--host", "0.0.0.0", "--port", "30000", "--context-length", "4096", "--reasoning-parser",
        "deepseek-r1", "--enable-metrics", "--enable-cache-report",
    ],
    ("sglang", "everything", False): [
        "python3", "-m", "sglang.launch_server", "--model-path", "/models/DeepSeek-R1", "--served-model-name",
        "DeepSeek-R1", "--host", "0.0.0.0", "--port", "30000", "--context-length", "131072", "--reasoning-parser",
        "deepseek-r1", "--enable-metrics", "--enable-cache-report", "--tp-size", "8", "--pp-size", "2",
        "--dp-size", "4", "--enable-dp-attention", "--ep-size", "32", "--max-running-requests", "64",
        "--mem-fraction-static", "0.9", "--speculative-algorithm", "EAGLE", "--speculative-num-steps", "1",
        "--speculative-eagle-topk", "1",
        "--speculative-num-draft-tokens", "2", "--hw-flag", "sglang", "--deployment-flag", "--user-flag",
    ],
    ("lmdeploy", "minimal", False): [
        "python3", "-m", "lmdeploy", "serve", "api_server", "/models/DeepSeek-R1", "--model-name", "DeepSeek-R1",
        "--server-name", "0.0.0.0", "--server-port", "30000", "--session-len", "4096", "--reasoning-parser",
        "default", "--logprobs-mode", "raw_logprobs",
    ],
    ("lmdeploy", "everything", False): [
        "python3", "-m", "lmdeploy", "serve", "api_server", "/models/DeepSeek-R1", "--model-name", "DeepSeek-R1",
        "--server-name", "0.0.0.0", "--server-port", "30000", "--session-len", "131072", "--reasoning-parser",
        "default", "--logprobs-mode", "raw_logprobs", "--tp", "8", "--dp", "4", "--ep", "32", "--max-batch-size", "64",
        "--cache-max-entry-count", "0.9", "--speculative-algorithm", "deepseek_mtp",
        "--speculative-num-draft-tokens", "1", "--hw-flag", "lmdeploy", "--deployment-flag", "--user-flag",
    ],
}


def synthetic_profile(deployment: str) -> HardwareProfile:
    engines = {name: {"args": ["--hw-flag", name]} for name in ENGINE_NAMES} if deployment == "everything" else {}
    return HardwareProfile.model_validate({
        "schema_version": 1,
        "hardware": {"name": "synthetic", "accelerator": "GPU", "devices": 8, "memory_gib_per_device": 80},
        "deployment": DEPLOYMENTS[deployment],
        "engines": engines,
    })


def pinned_request(deployment: str, on_cpu: bool) -> LaunchRequest:
    return LaunchRequest(python="python3", model="/models/DeepSeek-R1", served_model_name="DeepSeek-R1",
                         host="0.0.0.0", port=30000, hw=synthetic_profile(deployment),
                         extra_args=("--user-flag",) if deployment == "everything" else (), on_cpu=on_cpu)


def _command(engine: str, hw: str, extra: tuple[str, ...] = ()) -> list[str]:
    request = LaunchRequest(python="py", model="/models/DeepSeek-R1", served_model_name="DeepSeek-R1",
                            host="127.0.0.1", port=8123, hw=thresholds.load(hw), extra_args=extra)
    return get_adapter(engine).launch_command(request)


def _value(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


@pytest.mark.parametrize(("engine", "deployment", "on_cpu"), sorted(PINNED))
def test_flag_tables_build_the_pinned_commands(engine: str, deployment: str, on_cpu: bool) -> None:
    assert get_adapter(engine).launch_command(pinned_request(deployment, on_cpu)) == PINNED[engine, deployment, on_cpu]


@pytest.mark.parametrize("engine", ["sglang", "lmdeploy"])
def test_only_vllm_drops_a_flag_on_a_cpu_only_host(engine: str) -> None:
    adapter = get_adapter(engine)
    assert adapter.launch_command(pinned_request("everything", True)) == PINNED[engine, "everything", False]


def test_a_flag_row_must_name_a_real_field() -> None:
    with pytest.raises(ValueError, match="unknown field 'tensor_paralel'; valid fields: model, "):
        Flag("tensor_paralel", ("--tp", VALUE), when="above_one")


def test_a_constant_flag_row_cannot_take_a_value_or_a_condition() -> None:
    with pytest.raises(ValueError, match="has no field"):
        Flag(None, ("--tp", VALUE))
    with pytest.raises(ValueError, match="has no field"):
        Flag(None, ("--enable-metrics",), when="set")


@pytest.mark.parametrize("hw", PROFILES)
@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_every_engine_builds_a_command_for_every_profile(engine: str, hw: str) -> None:
    cmd = _command(engine, hw, ("--user-flag",))
    assert cmd[0] == "py"
    assert "8123" in cmd and "127.0.0.1" in cmd
    assert cmd[-1] == "--user-flag", "user --engine-arg values come last so they win"


def test_vllm_command_matches_seed_004_for_va16_tp32_pp2() -> None:
    cmd = _command("vllm", "va16/tp32-pp2")
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert _value(cmd, "--tensor-parallel-size") == "32"
    assert _value(cmd, "--pipeline-parallel-size") == "2"
    assert _value(cmd, "--max-model-len") == "131072"
    assert _value(cmd, "--reasoning-parser") == "deepseek_r1"
    assert "--enforce-eager" in cmd and "--speculative-config" not in cmd


def test_vllm_on_one_gpu_leaves_room_for_a_second_engine_and_prefills_with_fa2() -> None:
    cmd = _command("vllm", "gpu1")
    assert _value(cmd, "--gpu-memory-utilization") == "0.4"
    assert _value(cmd, "--attention-config") == '{"flash_attn_version": 2}'
    assert "--tensor-parallel-size" not in cmd


def test_vllm_mtp_deployment_adds_the_speculative_config() -> None:
    cmd = _command("vllm", "va16/tp32-mtp")
    assert _value(cmd, "--speculative-config") == '{"method": "deepseek_mtp", "num_speculative_tokens": 1}'


def test_lmdeploy_command_matches_seed_000_for_dp32_ep32() -> None:
    cmd = _command("lmdeploy", "h800/dp32-ep32")
    assert cmd[1:5] == ["-m", "lmdeploy", "serve", "api_server"]
    assert (_value(cmd, "--dp"), _value(cmd, "--ep")) == ("32", "32")
    assert _value(cmd, "--max-batch-size") == "128"
    assert _value(cmd, "--cache-max-entry-count") == "0.8"
    assert _value(cmd, "--max-prefill-token-num") == "8192"
    assert "--enable-microbatch" in cmd
    assert _value(cmd, "--backend") == "pytorch"


def test_lmdeploy_command_matches_seed_001_for_tp16() -> None:
    cmd = _command("lmdeploy", "h800/tp16")
    assert _value(cmd, "--tp") == "16"
    assert _value(cmd, "--server-port") == "8123"


def test_sglang_command_matches_seed_003_for_h20() -> None:
    cmd = _command("sglang", "h20")
    assert cmd[1:3] == ["-m", "sglang.launch_server"]
    assert _value(cmd, "--tp-size") == "8"
    assert _value(cmd, "--mem-fraction-static") == "0.9"
    assert _value(cmd, "--max-running-requests") == "128"
    assert _value(cmd, "--cuda-graph-max-bs") == "128"
    assert _value(cmd, "--reasoning-parser") == "deepseek-r1"


def test_sglang_parallel_flags_are_the_full_names_0_5_17_defines() -> None:
    # server_args.py 0.5.17: --tp-size (alias --tensor-parallel-size), --dp-size, --pp-size, --ep-size; the old
    # "--tp"/"--dp" were argparse abbreviations only
    cmd = _command("sglang", "h20")
    assert "--tp" not in cmd and "--dp" not in cmd
    assert "--enable-metrics" in cmd and "--enable-cache-report" in cmd


def test_sglang_on_one_gpu_uses_triton_attention_and_logs_decode_batches_often() -> None:
    cmd = _command("sglang", "gpu1")
    assert _value(cmd, "--attention-backend") == "triton"  # the carried kernel wheel has no FA3 library
    assert _value(cmd, "--decode-log-interval") == "4"
    assert _value(cmd, "--mem-fraction-static") == "0.4"
    assert _value(cmd, "--context-length") == "2048"


def test_lmdeploy_command_has_no_enable_metrics_flag_which_0_18_rejects() -> None:
    # lmdeploy 0.18.0 cli/utils.py has only --disable-metrics; metrics (and the stats log lines) are on by default
    for hw in ("gpu1", "h800/tp16", "h800/dp32-ep32"):
        assert "--enable-metrics" not in _command("lmdeploy", hw)


def test_lmdeploy_on_one_gpu_runs_the_pytorch_engine() -> None:
    cmd = _command("lmdeploy", "gpu1")
    assert _value(cmd, "--backend") == "pytorch"
    assert _value(cmd, "--cache-max-entry-count") == "0.4"
    assert _value(cmd, "--session-len") == "2048"
    assert _value(cmd, "--reasoning-parser") == "default"


def test_deployment_engine_args_apply_only_to_their_deployment() -> None:
    assert "--enable-microbatch" not in _command("lmdeploy", "h800/tp16")
