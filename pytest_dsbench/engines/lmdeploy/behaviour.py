"""LMDeploy's OpenAI-compatible server as the conformance checks see it: where it legitimately differs from
the API and the other engines, its known upstream bugs (strict xfails) and what differs by version."""

from __future__ import annotations

from pytest_dsbench.engines.base import EngineBehaviour, KnownFailure
from pytest_dsbench.engines.lmdeploy.servermetrics import SERVER_METRICS

BEHAVIOUR = EngineBehaviour(
    reasoning_field="reasoning_content",
    reasoning_usage_path="completion_tokens_details.reasoning_tokens",
    reasoning_count_includes_end_tag=False,
    error_envelope="flat",
    validates_model=True,
    validates_prompt_plus_max_tokens=False,
    multi_token_stop=False,
    logprobs_enabled=False,
    stream_options_without_stream_rejected=False,
    role_on_every_delta=True,
    tokenize_api="lmdeploy_encode",
    metrics_prefix="lmdeploy:",
    tool_parser=None,
    min_tokens_param="min_new_tokens",
    routed_experts=True,
    constraint_params="regex_schema",
    decode_log_format="lmdeploy",
    known_failures=(
        KnownFailure(
            "F02.stop_multi_token",
            "LMDeploy only honours single-token stop words; multi-token ones are logged and ignored",
            "https://github.com/InternLM/lmdeploy/issues/1631",
        ),
    ),
    server_metrics=SERVER_METRICS,
    features=frozenset({"ignore_eos", "metrics", "min_tokens", "n", "reasoning", "tokenize", "top_k"}),
)
