"""Engine profile entries read from the released engines' sources (issue 17), pinned so a later edit that
reverts them to the old guesses fails here."""

from __future__ import annotations

from pytest_dsbench.engines.adapters import get_adapter


def test_sglang_openai_routes_take_min_tokens() -> None:
    # sglang 0.5.17 entrypoints/openai/protocol.py: CompletionRequest.min_tokens and ChatCompletionRequest.min_tokens
    # (passed on as the sampler's min_new_tokens); an unknown min_new_tokens field is dropped silently
    assert get_adapter("sglang").behaviour.min_tokens_param == "min_tokens"


def test_lmdeploy_chat_route_takes_min_new_tokens() -> None:
    # lmdeploy 0.18.0 serve/openai/protocol.py: ChatCompletionRequest.min_new_tokens
    assert get_adapter("lmdeploy").behaviour.min_tokens_param == "min_new_tokens"


def test_sglang_reports_reasoning_tokens_at_the_top_of_usage_and_lmdeploy_in_the_details() -> None:
    # sglang 0.5.17 UsageInfo.reasoning_tokens; lmdeploy 0.18.0 UsageInfo.completion_tokens_details.reasoning_tokens
    assert get_adapter("sglang").behaviour.reasoning_usage_path == "reasoning_tokens"
    assert get_adapter("lmdeploy").behaviour.reasoning_usage_path == "completion_tokens_details.reasoning_tokens"
