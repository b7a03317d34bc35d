"""Start and attach modes against fake engines: health wait, log tail, teardown, fail-fast, usage errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_dsbench.testing.fake_engine import FakeEngineThread

USES_ENGINE = """
def test_models(dsbench_engine, openai_client):
    assert openai_client.get("/v1/models").status_code == 200
"""


def _pgid_file_test(path: Path) -> str:
    return f"""
import os
def test_record_pgid(dsbench_engine, pytestconfig):
    from pytest_dsbench.run import DsbenchRun
    proc = DsbenchRun.of(pytestconfig).engine.process
    open({str(path)!r}, "w").write(str(proc.pgid))
"""


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_mode_launches_serves_and_reports_identity(
    pytester: pytest.Pytester, engine_shim: Callable[..., Path]
) -> None:
    shim = engine_shim({"version": "9.9.9"})
    pytester.makepyfile(USES_ENGINE)
    result = pytester.runpytest("--engine-python", str(shim), "--model", "/models/x", "--served-model-name", "x")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*engine vllm 9.9.9 (start http://127.0.0.1:*) model=x max_model_len=4096*"])


def test_teardown_leaves_no_process_behind(
    pytester: pytest.Pytester, engine_shim: Callable[..., Path], tmp_path: Path
) -> None:
    shim = engine_shim(spawn_child=True)
    pgid_file = tmp_path / "pgid"
    pytester.makepyfile(_pgid_file_test(pgid_file))
    pytester.runpytest("--engine-python", str(shim), "--model", "/m/x").assert_outcomes(passed=1)
    pgid = int(pgid_file.read_text())
    deadline = time.monotonic() + 5
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _group_alive(pgid), f"processes of group {pgid} survived teardown"


def test_sigterm_stops_the_engine_and_stores_the_run_as_interrupted(
    pytester: pytest.Pytester, engine_shim: Callable[..., Path], tmp_path: Path
) -> None:
    shim = engine_shim(spawn_child=True)
    pgid_file = tmp_path / "pgid"
    pytester.makepyfile(
        _pgid_file_test(pgid_file)
        + """
def test_records_then_waits(dsbench_gate):
    import time
    dsbench_gate.record("tpot_ms_mean", 10.0)
    time.sleep(120)
"""
    )
    process = pytester.popen(
        [sys.executable, "-m", "pytest", "--engine-python", str(shim), "--model", "/m/x", "-p", "no:cacheprovider",
         "--dsbench-storage", "history"],
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not pgid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # the second test is sleeping now
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    pgid = int(pgid_file.read_text())
    deadline = time.monotonic() + 5
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _group_alive(pgid), f"processes of group {pgid} survived SIGTERM to pytest"
    assert process.returncode == pytest.ExitCode.INTERRUPTED, out.decode()[-2000:]
    stored = list(Path(pytester.path, "history").rglob("*.json"))
    assert len(stored) == 1 and json.loads(stored[0].read_text())["dsbench"]["interrupted"] is True


def test_engine_that_never_gets_healthy_fails_within_timeout_with_log_tail(
    pytester: pytest.Pytester, engine_shim: Callable[..., Path]
) -> None:
    shim = engine_shim({"faults": ["never_healthy"]})
    pytester.makepyfile(USES_ENGINE)
    started = time.monotonic()
    result = pytester.runpytest("--engine-python", str(shim), "--model", "/m/x", "--engine-startup-timeout", "3")
    assert time.monotonic() - started < 30
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*engine did not become healthy within 3 s*", "*fake engine*"])


def test_engine_that_exits_during_startup_shows_exit_code_and_log(
    pytester: pytest.Pytester, engine_shim: Callable[..., Path]
) -> None:
    shim = engine_shim({"faults": ["exit_during_startup"], "startup_delay_s": 0.2})
    pytester.makepyfile(USES_ENGINE)
    result = pytester.runpytest("--engine-python", str(shim), "--model", "/m/x", "--engine-startup-timeout", "30")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*engine exited (code 7) before it became healthy*",
                                 "*fatal: fake engine failed to load the model*"])


def test_engine_killed_mid_session_makes_remaining_tests_fail_fast(
    pytester: pytest.Pytester, engine_shim: Callable[..., Path]
) -> None:
    shim = engine_shim()
    pytester.makepyfile(
        """
        import os, signal, time
        def test_kill(dsbench_engine, pytestconfig):
            from pytest_dsbench.run import DsbenchRun
            proc = DsbenchRun.of(pytestconfig).engine.process
            os.killpg(proc.pgid, signal.SIGKILL)
            proc.popen.wait(10)
        def test_after_1(dsbench_engine, openai_client):
            openai_client.get("/v1/models")
        def test_after_2(dsbench_engine, openai_client):
            openai_client.get("/v1/models")
        """
    )
    started = time.monotonic()
    result = pytester.runpytest("--engine-python", str(shim), "--model", "/m/x")
    assert time.monotonic() - started < 30
    result.assert_outcomes(passed=1, errors=2)
    result.stdout.fnmatch_lines([f"*engine exited (code {-signal.SIGKILL})*"])


def test_attach_mode_uses_the_running_server(pytester: pytest.Pytester, fake_engine: FakeEngineThread) -> None:
    pytester.makepyfile(USES_ENGINE)
    result = pytester.runpytest("--engine", "sglang", "--base-url", fake_engine.base_url + "/v1")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*engine sglang 0.0.0-fake (attach {fake_engine.base_url}) model=fake-r1*"])


def test_unreachable_base_url_is_a_one_line_usage_error_within_10_s(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USES_ENGINE)
    started = time.monotonic()
    result = pytester.runpytest("--engine", "sglang", "--base-url", "http://127.0.0.1:1")
    assert time.monotonic() - started < 10
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: cannot reach --base-url http://127.0.0.1:1 (ConnectError*"])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_attach_with_unserved_model_names_the_served_ones(
    pytester: pytest.Pytester, fake_engine: FakeEngineThread
) -> None:
    pytester.makepyfile(USES_ENGINE)
    result = pytester.runpytest("--base-url", fake_engine.base_url, "--served-model-name", "DeepSeek-R1")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*model 'DeepSeek-R1' is not served at *. Served models: fake-r1.*"])


def test_attach_with_wrong_api_key_says_how_to_fix(
    pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread]
) -> None:
    engine = make_fake_engine(api_key="sk-secret-123")
    pytester.makepyfile(USES_ENGINE)
    result = pytester.runpytest("--base-url", engine.base_url, "--api-key", "sk-wrong-456")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*answered HTTP 401 (pass --api-key or set DSBENCH_API_KEY)*"])
    assert "sk-wrong-456" not in result.stderr.str() + result.stdout.str()


def test_api_key_never_appears_in_engine_log(
    pytester: pytest.Pytester, engine_shim: Callable[..., Path]
) -> None:
    shim = engine_shim({"api_key": "sk-top-secret"})
    pytester.makepyfile(USES_ENGINE)
    result = pytester.runpytest("--engine-python", str(shim), "--model", "/m/x", "--api-key", "sk-top-secret")
    result.assert_outcomes(passed=1)
    logs = list(Path(pytester.path, "dsbench-artifacts").glob("*.log"))
    assert logs, "the engine log is captured in the artifacts folder"
    assert all("sk-top-secret" not in log.read_text().split("\n", 1)[0] for log in logs)


def test_tests_not_using_the_engine_never_launch_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = pytester.runpytest("--engine-python", "/nonexistent/python")
    result.assert_outcomes(passed=1)


def test_per_test_artifacts_are_kept_on_failure_and_removed_on_pass(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_passes(dsbench_artifacts):
            (dsbench_artifacts / "records.jsonl").write_text("{}")
        def test_fails(dsbench_artifacts):
            (dsbench_artifacts / "records.jsonl").write_text("{}")
            assert False
        """
    )
    pytester.runpytest().assert_outcomes(passed=1, failed=1)
    kept = sorted(p.parent.name for p in Path(pytester.path, "dsbench-artifacts", "tests").glob("*/records.jsonl"))
    assert kept == ["test_per_test_artifacts_are_kept_on_failure_and_removed_on_pass.py-test_fails"]


def test_engine_args_and_env_reach_the_launched_process(
    pytester: pytest.Pytester, engine_shim: Callable[..., Path]
) -> None:
    shim = engine_shim()
    pytester.makepyfile(
        """
        import os
        def test_env(dsbench_engine, pytestconfig):
            from pytest_dsbench.run import DsbenchRun
            pid = DsbenchRun.of(pytestconfig).engine.process.pgid  # the group leader is the engine process
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\\0")
            assert b"DSBENCH_SELFTEST_FLAG=on" in environ
        """
    )
    result = pytester.runpytest("--engine-python", str(shim), "--model", "/m/x", "--engine-arg=--max-num-seqs=7",
                                "--engine-env", "DSBENCH_SELFTEST_FLAG=on")
    result.assert_outcomes(passed=1)
    command_line = next(Path(pytester.path, "dsbench-artifacts").glob("engine-*.log")).read_text().split("\n", 1)[0]
    assert command_line.startswith("$ ") and "--max-num-seqs=7" in command_line


def test_a_missing_engine_package_is_a_usage_error_naming_the_extra(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(USES_ENGINE)
    result = pytester.runpytest("--engine", "lmdeploy", "--model", "/m/x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert ("launching --engine lmdeploy needs the 'lmdeploy' package, which is not installed. Install it with: "
            "pip install 'pytest-dsbench[lmdeploy]'") in result.stdout.str() + result.stderr.str()


def test_eplb_with_base_url_is_a_usage_error(pytester: pytest.Pytester, fake_engine: FakeEngineThread) -> None:
    pytester.makepyfile(USES_ENGINE)
    result = pytester.runpytest("--base-url", fake_engine.base_url, "--eplb", "reference")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*--eplb installs a routing patch when the suite launches the engine; it cannot be "
                                 "used with --base-url.*"])


def test_gpu_tests_are_skipped_with_the_reason_on_a_machine_without_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no nvidia-smi
    pytester.makepyfile("import pytest\n@pytest.mark.gpu\ndef test_on_gpu():\n    pass\n")
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*needs an NVIDIA GPU; none is visible*"])


def test_the_async_client_talks_to_the_engine(pytester: pytest.Pytester, fake_engine: FakeEngineThread) -> None:
    pytester.makepyfile(
        """
        import asyncio
        def test_models(async_openai_client):
            async def go():
                async with async_openai_client as client:
                    return (await client.get("/v1/models")).status_code
            assert asyncio.run(go()) == 200
        """
    )
    pytester.runpytest("--base-url", fake_engine.base_url).assert_outcomes(passed=1)


ENGINE_MARKED = """
import pytest

@pytest.mark.only_engine("sglang")
def test_sglang_only():
    pass

@pytest.mark.requires("models_retrieve")
def test_needs_models_retrieve():
    pass
"""


def test_engine_specific_tests_are_skipped_with_the_reason_on_other_engines(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(ENGINE_MARKED)
    result = pytester.runpytest("--engine", "vllm", "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*only for engine(s) sglang; this is vllm*",
                                 "*engine vllm does not support feature(s): models_retrieve*"])
    pytester.runpytest("--engine", "sglang").assert_outcomes(passed=2)
