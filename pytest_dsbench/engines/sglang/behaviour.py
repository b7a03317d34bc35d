"""SGLang's OpenAI-compatible server as the conformance checks see it: where it legitimately differs from
the API and the other engines, its known upstream bugs (strict xfails) and what differs by version."""

from __future__ import annotations

from pytest_dsbench.engines.base import EngineBehaviour, KnownFailure
from pytest_dsbench.engines.sglang.servermetrics import SERVER_METRICS

_SOURCE = "https://github.com/sgl-project/sglang/blob/v0.5.17/python/"
"""Where the 0.5.17 source explains a divergence that has no upstream issue."""
_PROTOCOL = _SOURCE + "sglang/srt/entrypoints/openai/protocol.py"

BEHAVIOUR = EngineBehaviour(
    reasoning_field="reasoning_content",
    reasoning_usage_path="reasoning_tokens",
    reasoning_count_includes_end_tag=True,
    error_envelope="flat",
    validates_model=False,
    validates_prompt_plus_max_tokens=True,
    multi_token_stop=True,
    stream_options_without_stream_rejected=False,
    role_on_every_delta=False,
    tokenize_api="sglang",
    metrics_prefix="sglang:",
    tool_parser=None,
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
                        "reasoning", "structured_output", "tokenize", "top_k"}),
    # Seen on SGLang 0.5.17 serving fixtures/tiny-r1 on one H100 (2026-12-07, issue 17): without
    # --tool-call-parser the server answers tool chats with the raw DeepSeek markers in content (M01: content
    # '{"city": "Paris"}\n\n\n<｜tool▁calls▁begin｜>...', tool_calls empty); ``seed`` reaches the sampler only
    # under --enable-deterministic-inference (sampling/sampling_batch_info.py: sampling_seed is None
    # otherwise), so without it the same seeded request gave ' groups ofrou.\n</think>' then ' groups of 5.'.
    launch_features=(("tools", ("--tool-call-parser",)), ("seed", ("--enable-deterministic-inference",))),
    tool_parser_flag="--tool-call-parser",
    # scheduler max_req_input_len = min(context_len - 1, max_total_tokens - 1) - 5 (managers/tp_worker.py
    # get_worker_info): a prompt of 2047 tokens at --context-length 2048 got HTTP 400 "Input length (2047 tokens)
    # exceeds the maximum allowed length (2042 tokens)"; inputs of max_req_input_len or more are refused.
    context_reserved_tokens=6,
    # Req.update_finish_state (managers/schedule_batch.py) tests len(output_ids) >= max_new_tokens before the
    # eos: the reference prompt reverse-08, whose 32nd and last allowed token is the eos (its token ids came back
    # exactly, eos included), finished with "length" where vLLM answers "stop".
    eos_at_max_tokens_reason="length",
    # serving_chat.py renders [tool.model_dump() for tool in request.tools] after inserting an empty system
    # message. With the fixture model this prompt (209 tokens against 198 for the request's JSON) got, greedily
    # and on CPU transformers alike, 'The user wants the weather in Toky in Paris. I call get_time for
    # Tokyokyoky...' instead of the get_weather call: every M check that renders tools failed on the H100.
    tool_prompt_reserialised=True,
    known_failures=(
        *(
            KnownFailure(
                check_id,
                "SGLang's ChatCompletionRequest has no lower bound on max_tokens (only CompletionRequest checks "
                "it is positive): chat with max_tokens=0 answered HTTP 200 with empty content, streamed or not "
                "(0.5.17)",
                _PROTOCOL,
                match="max_tokens=0",
            )
            for check_id in ("B06.max_tokens_nonpositive", "G08.stream_error_before_start",
                             "B02.server_survives_bad_requests")
        ),
        KnownFailure(
            "B07.invalid_sampling_values",
            "SGLang accepts n=-1 on chat: HTTP 200 with one choice (temperature -1 or 'hot', top_p 0 or 1.5 and "
            "n=0 got 400; 0.5.17)",
            _PROTOCOL,
            match="{'n': -1}",
        ),
        KnownFailure(
            "B08.malformed_body",
            "SGLang's ChatCompletionRequest set_json_schema validator calls .get() on the body, so a JSON array "
            "body answers HTTP 500 (AttributeError: 'list' object has no attribute 'get'; 0.5.17)",
            _PROTOCOL,
            match="chat with a JSON array body: expected <a 4xx client error>, got <HTTP 500",
        ),
        KnownFailure(
            "B09.seed_out_of_range",
            "SGLang types seed as Optional[int] with no 64-bit bound: seed=2**63 answered HTTP 200 (0.5.17)",
            _PROTOCOL,
            match="seed=9223372036854775808",
        ),
        KnownFailure(
            "B10.logprobs_limits",
            "SGLang has no upper bound on top_logprobs: chat with logprobs=true, top_logprobs=21 answered HTTP 200 "
            "(0.5.17)",
            _PROTOCOL,
            match="top_logprobs=21",
        ),
        KnownFailure(
            "P01.concurrent_mixed_load",
            "Under P01's burst (one request per concurrency slot: chat, streamed chat, completions streamed and "
            "not, chat n=2 at temperature 0.3) SGLang logged nothing and scheduled no request for 135 s, until "
            "the client timed out and closed its connections; the requests then ran (the scheduler's next line "
            "reads input throughput 0.01 tok/s). Seen once (0.5.17, one H100, 2026-12-07 17:35:57-17:38:12); "
            "the request that stalls the tokenizer manager is not isolated yet",
            _SOURCE + "sglang/srt/managers/tokenizer_manager.py",
            match="ReadTimeout",
        ),
        KnownFailure(
            "B14.invalid_token_ids",
            "SGLang does not check prompt token ids against the vocabulary: POST /v1/completions {\"prompt\": "
            "[1000000000], \"max_tokens\": 2} reached the embedding, failed the CUDA assertion 'srcIndex < "
            "srcSelectDimSize' (Indexing.cu) and the scheduler died with CUBLAS_STATUS_EXECUTION_FAILED, taking "
            "the server down (0.5.17, one H100)",
            _SOURCE + "sglang/srt/managers/tokenizer_manager.py",
            kills_server=True,
        ),
    ),
)
