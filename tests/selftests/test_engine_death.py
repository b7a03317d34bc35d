"""An engine that dies mid-run: the test during which it died says so, and every later test fails fast with the
same engine-exited message and the log's tail, whatever fixture it goes through.

The engine is a real subprocess launched by the suite (start mode, through the ``--engine-python`` shim). It
serves from a child and dies as SGLang 0.5.17 did on a GPU: an out-of-vocabulary prompt token id kills the
server without a reply, the port refuses connections at once, and the engine process itself exits (SIGKILL)
only after a pause for its crash diagnostics. A fake in attach mode shows what a server the suite does not own
still gets: the plain connection failure.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_dsbench.session import embedded_model_dir
from pytest_dsbench.suite import SUITE_DIR
from pytest_dsbench.testing.fake_process import ServerProcess

CONTEXT = 2048  # thresholds/cpu.toml max_model_len: the fake serves the context the hw profile says
CRASHING = {"max_model_len": CONTEXT, "faults": ["crash_on_bad_token_ids"]}
DIAGNOSTICS_S = 2.0  # the pause between the server's death and the engine process's exit
KILLED = f"engine exited (code {-signal.SIGKILL})"
LATER = f"{KILLED}; remaining tests cannot run. Last lines of *engine-vllm.log:"

KILL_FIRST = """
import httpx

def test_aa_sends_the_token_id_that_crashes_the_engine(dsbench_engine, openai_client):
    try:
        openai_client.post("/v1/completions", json={"model": dsbench_engine.model, "prompt": [-1], "max_tokens": 2})
    except httpx.HTTPError:
        pass  # the server died without a reply; its process is still running its crash diagnostics
"""


def lit(pattern: str) -> str:
    """An fnmatch pattern in which ``[`` and ``]`` are literal (request bodies, parametrized test ids)."""
    return "".join({"[": "[[]", "]": "[]]"}.get(c, c) for c in pattern)


def suite(name: str) -> str:
    return str(SUITE_DIR / name)


@pytest.fixture
def run_crashing(pytester: pytest.Pytester, engine_shim: Callable[..., Path]) -> Callable[..., pytest.RunResult]:
    """Run pytest against a launched engine that a bad token id kills; ``args`` are test paths and options,
    ``model`` the ``--model`` (the fixture model's folder for the reference-output tests). A process of its own:
    an in-process run re-imports the suite's check modules, which register twice."""
    shim = engine_shim(CRASHING, supervisor_exit_delay_s=DIAGNOSTICS_S)

    def run(*args: str, model: str = "/m/x") -> pytest.RunResult:
        return pytester.runpytest_subprocess(
            *args, "--engine-python", str(shim), "--model", model, "--tokenizer", "chars",
            "-p", "no:cacheprovider", "-rfEs",
        )

    return run


def test_the_check_that_kills_the_engine_says_it_exited_during_that_check_and_names_the_request(
    run_crashing: Callable[..., pytest.RunResult],
) -> None:
    result = run_crashing(suite("test_api_validation.py"), "-k", "B14 or B16")
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines([lit(line) for line in (
        f'{KILLED} during check B14.invalid_token_ids (its last requests: POST /v1/completions {{"model": "x", '
        '"prompt": [-1], * -> RemoteProtocolError (sent again); POST /v1/completions * -> *Error); remaining '
        "tests cannot run. Last lines of *engine-vllm.log:",
        "RuntimeError: CUDA error: device-side assert triggered (fake engine, prompt token ids [-1])",
    )])
    result.stdout.fnmatch_lines(["*ERROR at setup of test_request_validation?B16.tools_without_parser?*", LATER])


def test_a_module_fixture_meeting_the_dying_engine_reports_its_exit_not_a_connect_error(
    pytester: pytest.Pytester, run_crashing: Callable[..., pytest.RunResult],
) -> None:
    kill = pytester.makepyfile(test_aa_kill=KILL_FIRST)
    result = run_crashing(str(kill), suite("test_reference_outputs.py"), model=str(embedded_model_dir()))
    result.assert_outcomes(passed=1, errors=6)
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_greedy_tokens_reproduce_reference*",
        f"{KILLED} during test test_greedy_tokens_reproduce_reference; remaining tests cannot run*",
        "*ERROR at setup of test_logprobs_reproduce_reference_within_tolerance*",
        LATER,
    ])
    assert "httpcore" not in result.stdout.str(), "no traceback wall"


def test_a_load_run_whose_warmup_meets_the_dying_engine_reports_its_exit_not_check_base_url(
    pytester: pytest.Pytester, run_crashing: Callable[..., pytest.RunResult],
) -> None:
    kill = pytester.makepyfile(test_aa_kill=KILL_FIRST)
    result = run_crashing(str(kill), suite("test_slo.py"))
    outcomes = result.parseoutcomes()
    assert outcomes["passed"] == 1 and outcomes["errors"] >= 2 and "failed" not in outcomes, outcomes
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_latency_meets_the_profile_slo?tpot_ms_mean?*",
        f"{KILLED} during test test_latency_meets_the_profile_slo?tpot_ms_mean?; remaining tests cannot run*",
    ])
    result.stdout.fnmatch_lines(["*ERROR at setup of test_server_metrics_meet_the_profile_slo*", LATER])
    assert "Check --base-url" not in result.stdout.str()


def test_attach_mode_keeps_the_connection_failure_for_a_server_it_does_not_own(
    pytester: pytest.Pytester, tmp_path: Path,
) -> None:
    server = ServerProcess.fake_engine(CRASHING, tmp_path / "attached.log").start()
    try:
        result = pytester.runpytest_subprocess(
            suite("test_api_validation.py"), "-k", "B14 or B16", "--base-url", server.base_url,
            "-p", "no:cacheprovider", "-rfEs",
        )
    finally:
        server.stop()
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines([lit(line) for line in (
        "*B14.invalid_token_ids: HTTP request failed (*); is the server still up? The last requests of "
        'the check: POST /v1/completions {"model": "fake-r1", "prompt": [-1]*',
        "*B16.tools_without_parser: HTTP request failed (ConnectError*); is the server still up?*",
    )])
    assert "engine exited" not in result.stdout.str()
