"""SGLang's OpenAI-compatible server as the conformance checks see it: where it legitimately differs from
the API and the other engines, its known upstream bugs (strict xfails) and what differs by version."""

from __future__ import annotations

from pytest_dsbench.engines.base import EngineBehaviour
from pytest_dsbench.engines.sglang.servermetrics import SERVER_METRICS

BEHAVIOUR = EngineBehaviour(
    reasoning_field="reasoning_content",
    reasoning_usage_path="reasoning_tokens",
    reasoning_count_includes_end_tag=True,
    error_envelope="flat",
    validates_model=False,
    validates_prompt_plus_max_tokens=True,
    multi_token_stop=True,
    logprobs_enabled=True,
    stream_options_without_stream_rejected=False,
    role_on_every_delta=False,
    tokenize_api="sglang",
    metrics_prefix="sglang:",
    tool_parser="deepseekv3",
    # the OpenAI-compatible requests take ``min_tokens`` (0.5.17 entrypoints/openai/protocol.py:
    # CompletionRequest.min_tokens, ChatCompletionRequest.min_tokens, mapped to the sampler's min_new_tokens);
    # ``min_new_tokens`` is the native /generate name, which the OpenAI routes drop silently (pydantic's
    # default extra="ignore"). Was "min_new_tokens", a guess that the fakes (which accept both) never caught.
    min_tokens_param="min_tokens",
    routed_experts=True,
    constraint_params="top_level_regex",
    text_offsets=False,  # utils.to_openai_style_logprobs sets text_offset = -1 (api_conformance.md J06)
    decode_log_format="sglang",
    server_metrics=SERVER_METRICS,
    prefix_cache_reset_path="/flush_cache",
    features=frozenset({"ignore_eos", "logit_bias", "logprobs", "metrics", "min_tokens", "models_retrieve", "n",
                        "reasoning", "seed", "structured_output", "tokenize", "tools", "top_k"}),
)
