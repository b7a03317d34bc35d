"""Checks follow the engine profile: a declared divergence passes, a server that contradicts its profile fails
with both named, and checks outside the profile skip with the reason."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from pytest_dsbench.conformance import CheckFailed, CheckSkipped, catalog
from pytest_dsbench.conformance.selftest import SELFTEST_BEHAVIOUR, fake_check_context
from pytest_dsbench.engines.base import EngineBehaviour
from pytest_dsbench.engines.sglang.behaviour import BEHAVIOUR as SGLANG_BEHAVIOUR

SGLANG_LIKE = dataclasses.replace(SGLANG_BEHAVIOUR, features=SELFTEST_BEHAVIOUR.features)
SGLANG_FAKE: dict[str, Any] = {
    "engine": "sglang",
    "error_envelope": "flat",
    "reasoning_field": "reasoning_content",
    "reasoning_usage_path": "reasoning_tokens",
    "clamp_max_tokens": False,
}


def run(check_id: str, behaviour: EngineBehaviour, faults: tuple[str, ...] = (), **config: Any) -> None:
    with fake_check_context(faults, behaviour=behaviour, **config) as ctx:
        catalog.get(check_id).func(ctx)


@pytest.mark.parametrize(
    "check_id",
    [
        "B01.error_envelope_shape",
        "N00.reasoning_field_matches_profile",
        "D07.usage_reasoning_tokens",
        "B05.context_overflow_prompt_plus_max_tokens",
        "N01.reasoning_present_and_separated",
        "A02.models_retrieve",
        "K03.temperature0_equals_topk1",
        "K07.logit_bias_ban",
    ],
)
def test_sglang_style_server_passes_under_the_sglang_profile(check_id: str) -> None:
    run(check_id, SGLANG_LIKE, **SGLANG_FAKE)


def test_flat_errors_under_a_nested_profile_fail_naming_both() -> None:
    with pytest.raises(CheckFailed, match=r"declares error_envelope='nested'.*expected 'nested', got 'flat"):
        run("B01.error_envelope_shape", SELFTEST_BEHAVIOUR, error_envelope="flat")


def test_reasoning_content_under_the_vllm_profile_fails_naming_both_keys() -> None:
    with pytest.raises(
        CheckFailed,
        match=r"declares reasoning_field='reasoning', but the server put the reasoning "
        r"in 'reasoning_content'",
    ):
        run("N00.reasoning_field_matches_profile", SELFTEST_BEHAVIOUR, reasoning_field="reasoning_content")


def test_server_that_rejects_what_the_profile_says_it_clamps_fails() -> None:
    with pytest.raises(CheckFailed, match=r"declares validates_prompt_plus_max_tokens=False.*got <HTTP 400"):
        run("B05.context_overflow_prompt_plus_max_tokens", SELFTEST_BEHAVIOUR, clamp_max_tokens=False)


def test_server_that_clamps_what_the_profile_says_it_rejects_fails() -> None:
    validating = dataclasses.replace(SELFTEST_BEHAVIOUR, validates_prompt_plus_max_tokens=True)
    with pytest.raises(CheckFailed, match=r"declares validates_prompt_plus_max_tokens=True.*got <HTTP 200"):
        run("B05.context_overflow_prompt_plus_max_tokens", validating)


def test_stream_options_without_stream_follows_the_declared_policy() -> None:
    lenient = dataclasses.replace(SELFTEST_BEHAVIOUR, stream_options_without_stream_rejected=False)
    run("B12.stream_options_without_stream", lenient, ("accept_stream_options",))
    with pytest.raises(CheckFailed, match=r"declares it is ignored.*got <HTTP 400"):
        run("B12.stream_options_without_stream", lenient)


def test_unknown_model_check_skips_when_the_profile_does_not_validate_models() -> None:
    lenient = dataclasses.replace(SELFTEST_BEHAVIOUR, validates_model=False)
    with pytest.raises(CheckSkipped, match="validates_model=False"):
        run("A03.unknown_model_404", lenient, ("accept_unknown_model",))


def test_a_check_needing_a_missing_feature_skips_with_the_feature_named(fake_engine: Any) -> None:
    import httpx

    from pytest_dsbench.conformance.selftest import fake_context

    without_tools = dataclasses.replace(SELFTEST_BEHAVIOUR, features=SELFTEST_BEHAVIOUR.features - {"tools"})
    with httpx.Client(base_url=fake_engine.base_url, timeout=5) as client:
        ctx = fake_context(fake_engine, without_tools, client=client)
        with pytest.raises(pytest.skip.Exception, match=r"does not support feature.*tools"):
            catalog.run("M01.tool_call_nonstream", ctx)


def test_without_a_token_counter_token_checks_skip_saying_how_to_get_one() -> None:
    with fake_check_context() as ctx:
        ctx.counter, ctx.counter_error = None, "no token counter: pass --tokenizer PATH"
        with pytest.raises(CheckSkipped, match="--tokenizer PATH"):
            catalog.get("D05.usage_prompt_tokens_chat_exact").func(ctx)


@pytest.mark.parametrize(
    ("engine", "check_id", "feature"),
    [
        ("vllm", "A02.models_retrieve", "models_retrieve"),
        ("lmdeploy", "A02.models_retrieve", "models_retrieve"),
        ("lmdeploy", "K07.logit_bias_ban", "logit_bias"),
        ("lmdeploy", "I04.n_with_seed", "seed"),
        ("vllm", "M06.parallel_tool_calls_false", "tools"),
    ],
)
def test_a_check_the_engine_profile_lacks_a_feature_for_skips_naming_it(
    engine: str, check_id: str, feature: str, fake_engine: Any
) -> None:
    import httpx

    from pytest_dsbench.conformance.selftest import fake_context
    from pytest_dsbench.engines.adapters import adapter_class

    with httpx.Client(base_url=fake_engine.base_url, timeout=5) as client:
        ctx = fake_context(fake_engine, adapter_class(engine).behaviour, client=client)
        with pytest.raises(pytest.skip.Exception, match=rf"does not support feature\(s\): .*\b{feature}\b"):
            catalog.run(check_id, ctx)


def test_echo_with_logprobs_skips_where_the_engine_ignores_echo(fake_engine: Any) -> None:
    import httpx

    from pytest_dsbench.conformance.selftest import fake_context
    from pytest_dsbench.engines.adapters import adapter_class

    with httpx.Client(base_url=fake_engine.base_url, timeout=5) as client:
        ctx = fake_context(fake_engine, adapter_class("lmdeploy").behaviour, client=client)
        with pytest.raises(pytest.skip.Exception, match="ignores it"):
            catalog.run("J07.echo_completions", ctx)


def test_on_the_fixture_model_utf8_streaming_skips_and_the_long_context_check_needs_no_needle() -> None:
    with fake_check_context() as ctx:
        ctx.task_only_model = True
        with pytest.raises(CheckSkipped, match="fixture model"):
            catalog.get("G07.stream_utf8_integrity").func(ctx)
        catalog.get("P05.long_context_near_limit").func(ctx)


def test_long_context_check_stays_within_the_deployments_max_input_len() -> None:
    with fake_check_context(max_input_len=700) as ctx:
        ctx.target = dataclasses.replace(ctx.target, max_input_len=700)
        catalog.get("P05.long_context_near_limit").func(ctx)  # the fake rejects prompts over 700 tokens


@pytest.mark.parametrize(
    ("version", "versions", "matches"),
    [
        ("0.20.1", "==0.20.*", True),
        ("0.32.0+cpu", ">=0.32", True),
        ("0.21.0rc1", "<0.21", False),  # PEP 440: a pre-release of 0.21 is not below 0.21
        ("0.32.0", "<0.21", False),
        ("unknown", "<0.21", False),
        ("unknown", "", True),
        (None, "==0.20.*", False),
    ],
)
def test_engine_version_specifiers(version: str | None, versions: str, matches: bool) -> None:
    from pytest_dsbench.engines.base import version_matches

    assert version_matches(version, versions) is matches


def test_a_profile_for_a_version_applies_only_that_versions_behaviours() -> None:
    from pytest_dsbench.engines.vllm.behaviour import BEHAVIOUR

    assert BEHAVIOUR.for_version("0.20.1").validates_prompt_plus_max_tokens is True
    assert BEHAVIOUR.for_version("0.32.0").validates_prompt_plus_max_tokens is False
    assert BEHAVIOUR.for_version("unknown") is BEHAVIOUR
    assert BEHAVIOUR.known_failure("B13.structured_output_bad_schema") is None  # collection: version not yet known
    assert BEHAVIOUR.known_failure("B13.structured_output_bad_schema", "0.20.1") is not None


def test_a_version_behaviour_may_only_change_fields_read_after_the_version_is_known() -> None:
    from pytest_dsbench.engines.base import VersionBehaviour
    from pytest_dsbench.engines.vllm.behaviour import BEHAVIOUR

    with pytest.raises(ValueError, match=r"changes features, which a version cannot change"):
        dataclasses.replace(BEHAVIOUR, version_behaviours=(VersionBehaviour("<1", (("features", frozenset()),), "x"),))


def test_vllm_has_the_tools_feature_only_when_launched_with_the_tool_parser() -> None:
    from pytest_dsbench import thresholds
    from pytest_dsbench.engines.command import profile_args
    from pytest_dsbench.engines.vllm.behaviour import BEHAVIOUR

    launched = BEHAVIOUR.for_launch(profile_args(thresholds.load("cpu"), "vllm"))
    assert "tools" in launched.features and launched.tool_parser == "deepseek_v3"
    attached = BEHAVIOUR.for_launch(None)
    assert "tools" not in attached.features and attached.tool_parser is None
    parser_only = BEHAVIOUR.for_launch(["--tool-call-parser", "deepseek_v3"])  # no --enable-auto-tool-choice
    assert "tools" not in parser_only.features


def test_an_attached_vllm_skips_the_tool_checks_and_a_launched_one_runs_them(
    pytester: pytest.Pytester, fake_engine: Any
) -> None:
    from pathlib import Path

    api_tools = Path(__file__).resolve().parents[2] / "pytest_dsbench" / "suite" / "test_api_tools.py"
    # a process of its own: an in-process run re-imports the suite's check modules, which register twice
    result = pytester.runpytest_subprocess(
        str(api_tools), "--base-url", fake_engine.base_url, "-p", "no:cacheprovider", "-rs"
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) == len(catalog.params("M")) and "passed" not in outcomes, outcomes
    result.stdout.fnmatch_lines(["*engine vllm does not support feature(s): tools*"])


def test_a_server_that_keeps_context_back_passes_the_boundary_check_when_the_profile_declares_it() -> None:
    run("B04.context_boundary", SGLANG_LIKE, reserved_context_tokens=6, **SGLANG_FAKE)


def test_a_server_that_keeps_context_back_fails_the_boundary_check_under_a_profile_that_does_not() -> None:
    plain = dataclasses.replace(SGLANG_LIKE, context_reserved_tokens=0)
    with pytest.raises(CheckFailed, match=r"prompt of \d+ tokens, max_tokens=1: expected <HTTP 200.*"
                                          r"exceeds the maximum allowed length"):
        run("B04.context_boundary", plain, reserved_context_tokens=6, **SGLANG_FAKE)


def test_sglang_has_tools_and_seed_only_when_launched_with_their_flags() -> None:
    from pytest_dsbench import thresholds
    from pytest_dsbench.engines.command import profile_args

    launched = SGLANG_BEHAVIOUR.for_launch(profile_args(thresholds.load("gpu1"), "sglang"))
    assert "tools" in launched.features and launched.tool_parser == "deepseekv3"
    assert "seed" not in launched.features  # gpu1 does not run --enable-deterministic-inference
    deterministic = SGLANG_BEHAVIOUR.for_launch(["--enable-deterministic-inference"])
    assert "seed" in deterministic.features and "tools" not in deterministic.features
    assert {"tools", "seed"}.isdisjoint(SGLANG_BEHAVIOUR.for_launch(None).features)


def test_a_known_failure_that_kills_the_server_cannot_be_limited_to_versions() -> None:
    from pytest_dsbench.engines.base import KnownFailure

    with pytest.raises(ValueError, match=r"B14.invalid_token_ids: kills_server is decided at collection"):
        KnownFailure("B14.invalid_token_ids", "crashes", "https://example.invalid", versions="==1.*",
                     kills_server=True)


def test_a_check_whose_request_kills_the_engine_is_an_xfail_that_does_not_run(
    pytester: pytest.Pytester, fake_engine: Any
) -> None:
    from pathlib import Path

    validation = Path(__file__).resolve().parents[2] / "pytest_dsbench" / "suite" / "test_api_validation.py"
    result = pytester.runpytest_subprocess(
        str(validation), "--engine", "sglang", "--base-url", fake_engine.base_url, "-k", "B14", "-rx",
        "-p", "no:cacheprovider",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("xfailed") == 1 and not {"passed", "failed", "error"} & set(outcomes), outcomes
    result.stdout.fnmatch_lines(["*B14.invalid_token_ids*not run: its request kills the server*"])


def test_tool_checks_skip_on_the_fixture_model_where_the_engine_reserialises_the_tools() -> None:
    with fake_check_context(behaviour=SGLANG_LIKE, **SGLANG_FAKE) as ctx:
        ctx.task_only_model = True
        with pytest.raises(CheckSkipped, match=r"renders the tools it re-serialised, not the request.s JSON"):
            catalog.get("M01.tool_call_nonstream").func(ctx)
        catalog.get("B16.tools_without_parser").func(ctx)  # judges only the status: still runs
        catalog.get("M03.tool_choice_none").func(ctx)  # no tools rendered with tool_choice none


def test_tool_checks_run_on_a_real_model_where_the_engine_reserialises_the_tools() -> None:
    run("M01.tool_call_nonstream", SGLANG_LIKE, **SGLANG_FAKE)
