"""The `api` group end to end: pytest_dsbench/suite/test_api_*.py run through the plugin against fake engines.

Attach mode points the real suite at an in-process fake; the outcomes show what a user sees: all green on a
compliant server, the violated check failing with expected vs actual, known engine bugs as strict xfails, and
a server that contradicts its engine profile failing with both named.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pytest_dsbench.suite import SUITE_DIR
from pytest_dsbench.testing.fake_engine import FakeEngineThread

CONFORMANCE = SUITE_DIR
API_FILES = sorted(str(p) for p in CONFORMANCE.glob("test_api_*.py"))
CPU_CONTEXT = 2048  # thresholds/cpu.toml max_model_len: the fake must serve the context the hw profile says


def run_api(pytester: pytest.Pytester, engine: FakeEngineThread, *args: str) -> pytest.RunResult:
    return pytester.runpytest(
        *API_FILES, "--base-url", engine.base_url, "-p", "no:cacheprovider", "-rfEsxX", *args
    )


def test_compliant_engine_passes_the_whole_api_group(
    pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread]
) -> None:
    # vLLM's profile declares one upstream bug (D07, vllm PR #49743); the fake reproduces it, so it xfails.
    engine = make_fake_engine(max_model_len=CPU_CONTEXT, faults=["reasoning_tokens_zero"])
    result = run_api(pytester, engine)
    outcomes = result.parseoutcomes()
    assert result.ret == 0, result.stdout.str()[-3000:]
    assert outcomes.get("failed", 0) == 0
    assert outcomes["xfailed"] == 1
    assert outcomes["passed"] >= 80


@pytest.mark.parametrize(
    "variation",
    [
        {"sse_newline": "\r\n", "sse_extras": True},
        {"sse_newline": "\r", "tokens_per_chunk": 3},
    ],
    ids=["crlf-keepalive-comments-retry", "cr-several-tokens-per-chunk"],
)
def test_valid_sse_variations_pass_the_whole_api_group(
    pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread], variation: dict[str, object]
) -> None:
    # What the SSE specification allows, clients read and gateways send (sse-starlette pings, CRLF) is no fault.
    engine = make_fake_engine(max_model_len=CPU_CONTEXT, faults=["reasoning_tokens_zero"], **variation)
    result = run_api(pytester, engine)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, result.stdout.str()[-3000:]
    assert result.ret == 0


def test_a_violation_fails_its_check_with_expected_and_actual(
    pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread]
) -> None:
    engine = make_fake_engine(max_model_len=CPU_CONTEXT, faults=["no_done"])
    result = run_api(pytester, engine, "-k", "G02 or G01 or A01")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "G02.sse_framing: streamed chat SSE framing: expected <no framing problems>, got "
            "*no final 'data: [[]DONE]' event*"
        ]
    )


def test_known_engine_bug_is_a_strict_xfail_with_its_link(
    pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread]
) -> None:
    lmdeploy_like = {
        "max_model_len": CPU_CONTEXT,
        "engine": "lmdeploy",
        "error_envelope": "flat",
        "reasoning_field": "reasoning_content",
    }
    buggy = make_fake_engine(**lmdeploy_like, faults=["stop_single_token_only"])
    result = run_api(pytester, buggy, "--engine", "lmdeploy", "-k", "F02")
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines(
        ["*XFAIL*F02.stop_multi_token*https://github.com/InternLM/lmdeploy/issues/1631*"]
    )


def test_fixed_engine_bug_turns_its_strict_xfail_into_a_failure(
    pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread]
) -> None:
    fixed = make_fake_engine(
        max_model_len=CPU_CONTEXT,
        engine="lmdeploy",
        error_envelope="flat",
        reasoning_field="reasoning_content",
    )
    result = run_api(pytester, fixed, "--engine", "lmdeploy", "-k", "F02")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*[XPASS(strict)]*"])


def test_reasoning_key_that_contradicts_the_profile_fails_naming_both(
    pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread]
) -> None:
    engine = make_fake_engine(
        max_model_len=CPU_CONTEXT, error_envelope="flat"
    )  # sends 'reasoning', like vLLM
    result = run_api(pytester, engine, "--engine", "sglang", "-k", "N00")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*engine profile sglang declares reasoning_field='reasoning_content', but the "
            "server put the reasoning in 'reasoning'*"
        ]
    )


def test_error_envelope_that_contradicts_the_profile_fails_naming_both(
    pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread]
) -> None:
    engine = make_fake_engine(max_model_len=CPU_CONTEXT, faults=["flat_error_body"])
    result = run_api(pytester, engine, "-k", "B01")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*engine profile vllm declares error_envelope='nested'*expected 'nested', got 'flat: *"]
    )


def test_checks_outside_the_engine_profile_skip_with_the_reason(
    pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread]
) -> None:
    engine = make_fake_engine(max_model_len=CPU_CONTEXT)
    result = run_api(pytester, engine, "-k", "M01")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*engine vllm does not support feature(s): tools*"])


@pytest.mark.parametrize(("version", "outcome"), [("0.20.1", "xfailed"), ("0.32.0", "failed")])
def test_a_bug_of_some_engine_versions_is_a_strict_xfail_on_those_versions_only(
    pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread], version: str, outcome: str
) -> None:
    # vLLM's profile: an invalid JSON schema answers 500 on 0.20.* (vllm #57725); 0.32 answers 400
    engine = make_fake_engine(max_model_len=CPU_CONTEXT, version=version, faults=["invalid_schema_500"])
    result = run_api(pytester, engine, "-k", "B13")
    result.assert_outcomes(**{outcome: 1})
    if outcome == "xfailed":
        result.stdout.fnmatch_lines(["*XFAIL*B13*vllm/issues/57725; vllm 0.20.1 is ==0.20.*"])


@pytest.mark.parametrize(("version", "clamps", "outcome"), [("0.20.1", False, "passed"), ("0.20.1", True, "failed"),
                                                             ("0.32.0", True, "passed")])
def test_a_versions_declared_behaviour_is_what_its_check_expects(
    pytester: pytest.Pytester,
    make_fake_engine: Callable[..., FakeEngineThread],
    version: str,
    clamps: bool,
    outcome: str,
) -> None:
    # vLLM 0.20 rejects prompt + max_tokens over the window with 400; 0.32 clamps max_tokens to the window
    engine = make_fake_engine(max_model_len=CPU_CONTEXT, version=version, clamp_max_tokens=clamps)
    result = run_api(pytester, engine, "-k", "B05")
    result.assert_outcomes(**{outcome: 1})


def test_a_version_limited_known_bug_that_is_gone_fails_asking_to_update_the_profile(
    pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread]
) -> None:
    engine = make_fake_engine(max_model_len=CPU_CONTEXT, version="0.20.1")  # answers the bad schema with 400
    result = run_api(pytester, engine, "-k", "B13")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*B13.structured_output_bad_schema passed, but the engine profile declares a "
                                 "known bug of vllm 0.20.1*remove it from the profile"])


def test_another_failure_of_a_check_with_a_version_limited_known_bug_still_fails(
    pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread]
) -> None:
    # vLLM 0.20's known B08 bug is the JSON array body; this fake also answers invalid JSON with 500
    engine = make_fake_engine(max_model_len=CPU_CONTEXT, version="0.20.1", faults=["malformed_body_500"])
    result = run_api(pytester, engine, "-k", "B08")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*B08.malformed_body: chat with invalid JSON: expected <a 4xx client error>*"
                                 "(not the known bug of ==0.20.*, which shows as*"])


def test_the_version_limited_b08_bug_is_an_xfail_and_the_other_cases_are_still_judged(
    pytester: pytest.Pytester, make_fake_engine: Callable[..., FakeEngineThread]
) -> None:
    engine = make_fake_engine(max_model_len=CPU_CONTEXT, version="0.20.1", faults=["array_body_500"])
    run_api(pytester, engine, "-k", "B08").assert_outcomes(xfailed=1)
