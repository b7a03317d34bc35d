"""Launch commands: each engine x hardware profile gets the seeds' command with the profile's parallelism."""

from __future__ import annotations

import pytest

from pytest_dsbench import thresholds
from pytest_dsbench.engines import ADAPTERS, LaunchRequest, get_adapter
from pytest_dsbench.errors import DsbenchUsageError

PROFILES = [
    f"{name}/{dep}" if dep else name
    for name in thresholds.available(thresholds.default_dir())
    for dep in ["", *sorted(thresholds.load(name).deployments)]
]


def _command(engine: str, hw: str, extra: tuple[str, ...] = ()) -> list[str]:
    request = LaunchRequest(python="py", model="/models/DeepSeek-R1", served_model_name="DeepSeek-R1",
                            host="127.0.0.1", port=8123, hw=thresholds.load(hw), extra_args=extra)
    return get_adapter(engine).launch_command(request)


def _value(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


@pytest.mark.parametrize("hw", PROFILES)
@pytest.mark.parametrize("engine", sorted(ADAPTERS))
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


def test_unknown_engine_lists_valid_ones() -> None:
    with pytest.raises(DsbenchUsageError, match="Valid engines: lmdeploy, sglang, vllm"):
        get_adapter("tgi")
