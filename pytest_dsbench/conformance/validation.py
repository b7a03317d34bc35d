"""B. Request validation and the error schema; HW. the hardware profile's request limits (seed 004)."""

from __future__ import annotations

from typing import Any

from pytest_dsbench.conformance.catalog import REFERENCE, check
from pytest_dsbench.conformance.common import (
    assert_alive,
    client_error,
    ok_json,
    overlong_content,
    rejected,
    usage_of,
)
from pytest_dsbench.conformance.context import DROP, ApiContext
from pytest_dsbench.conformance.expect import desc, expect, fail, skip
from pytest_dsbench.conformance.tokens import exact_chat_content

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
_CONTEXT_WORDS = ("context", "length", "token", "too long", "maximum")


def _mentions_context(message: str | None) -> bool:
    lower = (message or "").lower()
    return any(word in lower for word in _CONTEXT_WORDS)


@check(
    "B01.error_envelope_shape",
    "A 400 is JSON with a message, in the error envelope the engine profile "
    "declares (nested OpenAI {error:{message,type,param,code}} or flat)",
    severity="MUST",
    faults=("flat_error_body", "error_body_not_json", "error_without_message"),
    source=f"{REFERENCE} B01; [vllm #12886](https://github.com/vllm-project/vllm/issues/12886)",
    deviations={"sglang": "flat envelope (declared)", "lmdeploy": "flat envelope (declared)"},
)
def error_envelope_shape(ctx: ApiContext) -> None:
    reply = ctx.api.post(CHAT, ctx.chat_body(temperature=-1.0, max_tokens=4))
    rejected(reply, "chat with temperature=-1")
    expect(
        reply.content_type == "application/json", "error Content-Type", "application/json", reply.content_type
    )
    declared = ctx.behaviour.error_envelope
    actual = reply.envelope()
    if actual != declared:
        fail(
            f"error body envelope (engine profile {ctx.target.engine} declares error_envelope={declared!r})",
            declared,
            f"{actual}: {reply.body[:160].decode('utf-8', 'replace')}",
        )
    if declared == "nested":
        error = reply.obj()["error"]
        for key, kind in (("message", str), ("type", str)):
            expect(
                isinstance(error.get(key), kind), f"error.{key}", desc(f"a {kind.__name__}"), error.get(key)
            )
        for key in ("param", "code"):
            expect(key in error, f"error.{key}", desc("present (may be null)"), desc(f"missing in {error}"))


@check(
    "B02.server_survives_bad_requests",
    "After invalid requests (streamed and not) a valid request still answers 200",
    severity="MUST",
    faults=("poison_after_bad_request",),
    source=f"{REFERENCE} B02",
)
def server_survives_bad_requests(ctx: ApiContext) -> None:
    bad: list[tuple[str, str, dict[str, Any]]] = [
        (CHAT, "max_tokens=-1", ctx.chat_body(max_tokens=-1)),
        (CHAT, "temperature='hot'", ctx.chat_body(temperature="hot", max_tokens=4)),
        (CHAT, "max_tokens=0, streamed", ctx.chat_body(max_tokens=0, stream=True)),
        (COMPLETIONS, "max_tokens=-1", ctx.completion_body(max_tokens=-1)),
    ]
    for path, what, body in bad:
        status = ctx.api.stream(path, body).status if body.get("stream") else ctx.api.post(path, body).status
        expect(400 <= status < 500, f"invalid request to {path} ({what})", desc("a 4xx"), status)
    ctx.api.post(CHAT, content=b"{not json", headers={"Content-Type": "application/json"})
    assert_alive(ctx, "after invalid requests")


@check(
    "B03.context_overflow_prompt",
    "A prompt over max_model_len is rejected with 400 naming the context "
    "length, and when streamed before any SSE starts",
    severity="MUST",
    faults=("accept_overlong_prompt", "error_500_instead_of_400", "stream_error_in_band"),
    source=f"{REFERENCE} B03; [NeMo-RL #3878](https://github.com/NVIDIA-NeMo/RL/pull/3878)",
)
def context_overflow_prompt(ctx: ApiContext) -> None:
    content = overlong_content(ctx.target.max_model_len + 10)
    body = ctx.chat_body(content, max_tokens=1)
    reply = ctx.api.post(CHAT, body)
    rejected(reply, f"chat prompt over max_model_len={ctx.target.max_model_len}")
    expect(
        _mentions_context(reply.error_message()),
        "context-overflow error message",
        desc("a message about the context length"),
        reply.error_message(),
    )
    stream = ctx.api.stream(CHAT, {**body, "stream": True})
    if stream.status == 200:
        fail(
            "streamed chat prompt over max_model_len",
            desc("HTTP 400 before any SSE event"),
            desc(f"HTTP 200 and a stream: {stream.body[:160]!r}"),
        )
    rejected(stream.as_reply(), "streamed chat prompt over max_model_len")


@check(
    "B04.context_boundary",
    "A prompt of exactly max_model_len tokens is rejected; max_model_len - 1 (less the tokens the engine "
    "profile declares it keeps back) with max_tokens=1 is served with one token",
    severity="MUST",
    faults=("context_off_by_one",),
    source=f"{REFERENCE} B04; vLLM test_serving_chat",
)
def context_boundary(ctx: ApiContext) -> None:
    counter = ctx.tokens()
    limit = ctx.target.max_model_len
    at_limit = exact_chat_content(counter, limit)
    if at_limit is None:
        skip(f"could not build a prompt of exactly {limit} tokens with {counter.source}")
    reply = ctx.api.post(CHAT, ctx.chat_body(at_limit, max_tokens=1))
    rejected(reply, f"prompt of exactly max_model_len={limit} tokens")
    fits = limit - 1 - ctx.behaviour.context_reserved_tokens
    if ctx.target.max_input_len_enforced and ctx.target.max_input_len:
        fits = min(fits, ctx.target.max_input_len)
    below = exact_chat_content(counter, fits)
    if below is None:
        skip(f"could not build a prompt of exactly {fits} tokens with {counter.source}")
    body = ok_json(
        ctx.api.post(CHAT, ctx.chat_body(below, max_tokens=1)), f"prompt of {fits} tokens, max_tokens=1"
    )
    usage = usage_of(body, f"prompt of {fits} tokens")
    expect(
        usage["prompt_tokens"] == fits,
        "usage.prompt_tokens of the boundary prompt",
        fits,
        usage["prompt_tokens"],
    )
    expect(
        usage["completion_tokens"] <= 1,
        "usage.completion_tokens with max_tokens=1",
        desc("<= 1"),
        usage["completion_tokens"],
    )


@check(
    "B05.context_overflow_prompt_plus_max_tokens",
    "prompt + max_tokens over the context is handled as the profile declares: rejected with 400, or served "
    "with the output clamped to the window left (finish_reason length); never 5xx, never past the context",
    severity="SHOULD",
    faults=("no_length_check",),
    source=f"{REFERENCE} B05; [vllm #33418](https://github.com/vllm-project/vllm/issues/33418); vLLM 0.32 "
    "`get_max_tokens` clamps",
    deviations={
        "vllm": "clamps max_tokens to the window (declared; 0.32)",
        "lmdeploy": "runs to the window (declared)",
    },
)
def context_overflow_prompt_plus_max_tokens(ctx: ApiContext) -> None:
    window = 8
    prompt_tokens = ctx.target.max_model_len - window
    if ctx.target.max_input_len_enforced and (ctx.target.max_input_len or 0) < prompt_tokens:
        skip(
            f"max_input_len={ctx.target.max_input_len} is enforced: no prompt leaves a {window}-token window"
        )
    content = exact_chat_content(ctx.tokens(), prompt_tokens)
    if content is None:
        skip(f"could not build a prompt of exactly {prompt_tokens} tokens")
    what = f"prompt of {prompt_tokens} tokens with max_tokens=max_model_len={ctx.target.max_model_len}"
    reply = ctx.api.post(CHAT, ctx.chat_body(content, max_tokens=ctx.target.max_model_len))
    declared = f"engine profile {ctx.target.engine} declares validates_prompt_plus_max_tokens="
    if ctx.behaviour.validates_prompt_plus_max_tokens:
        if reply.status == 200:
            fail(
                f"{what} ({declared}True)", desc("HTTP 400"), desc(f"HTTP 200: served, {reply.body[:120]!r}")
            )
        rejected(reply, what)
        return
    if reply.status != 200:
        fail(f"{what} ({declared}False: served within the window)", desc("HTTP 200"), desc(reply.describe()))
    body = reply.obj()
    used = usage_of(body, what)["completion_tokens"]
    expect(used <= window, f"{what}: usage.completion_tokens", f"<= {window} (the window left)", used)
    reason = (body.get("choices") or [{}])[0].get("finish_reason")
    expect(reason in ("length", "stop"), f"{what}: finish_reason", desc("length (or stop)"), reason)


@check(
    "B06.max_tokens_nonpositive",
    "max_tokens / max_completion_tokens of 0 or -1 answer 400 on chat and "
    "completions, and the server survives",
    severity="MUST",
    faults=("accept_max_tokens_zero", "error_500_instead_of_400"),
    source=f"{REFERENCE} B06; [vllm #6521](https://github.com/vllm-project/vllm/issues/6521)",
)
def max_tokens_nonpositive(ctx: ApiContext) -> None:
    cases = [
        (CHAT, ctx.chat_body(max_tokens=0), "chat max_tokens=0"),
        (CHAT, ctx.chat_body(max_tokens=-1), "chat max_tokens=-1"),
        (CHAT, ctx.chat_body(max_tokens=DROP, max_completion_tokens=0), "chat max_completion_tokens=0"),
        (COMPLETIONS, ctx.completion_body(max_tokens=0), "completions max_tokens=0"),
        (COMPLETIONS, ctx.completion_body(max_tokens=-1), "completions max_tokens=-1"),
    ]
    for path, body, what in cases:
        rejected(ctx.api.post(path, body), what)
    assert_alive(ctx, "after max_tokens <= 0")


@check(
    "B07.invalid_sampling_values",
    "Out-of-range or mistyped sampling parameters answer 400 (not 422, not 500)",
    severity="MUST",
    faults=("accept_invalid_sampling", "validation_422", "error_500_instead_of_400"),
    source=f"{REFERENCE} B07",
)
def invalid_sampling_values(ctx: ApiContext) -> None:
    cases: list[dict[str, Any]] = [
        {"temperature": -1.0},
        {"temperature": "hot"},
        {"top_p": 0},
        {"top_p": 1.5},
        {"n": 0},
        {"n": -1},
        {"presence_penalty": 5.0},
        {"frequency_penalty": -5.0},
    ]
    for params in cases:
        rejected(ctx.api.post(CHAT, ctx.chat_body(max_tokens=4, **params)), f"chat with {params}")


@check(
    "B08.malformed_body",
    "Unparsable JSON, a non-object body, a form body and a chat without messages get a "
    "4xx, and the server survives",
    severity="MUST",
    faults=("malformed_body_500", "array_body_500"),
    source=f"{REFERENCE} B08; vLLM test_non_object_body_validation",
)
def malformed_body(ctx: ApiContext) -> None:
    json_header = {"Content-Type": "application/json"}
    cases = [
        ("invalid JSON", ctx.api.post(CHAT, content=b'{"model": ', headers=json_header)),
        (
            "a form-encoded body",
            ctx.api.post(
                CHAT,
                content=b"model=x&prompt=y",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ),
        ),
        ("a chat without messages", ctx.api.post(CHAT, ctx.chat_body(messages=DROP, max_tokens=4))),
    ]
    for what, reply in cases:
        client_error(reply, f"chat with {what}")
    assert_alive(ctx, "after malformed bodies")
    # last, so that an engine version known to fail only this case (vLLM 0.20) still has the others judged
    client_error(ctx.api.post(CHAT, content=b"[1, 2]", headers=json_header), "chat with a JSON array body")
    assert_alive(ctx, "after a JSON array body")


@check(
    "B09.seed_out_of_range",
    "A seed outside the 64-bit range answers 400",
    severity="SHOULD",
    faults=("accept_huge_seed",),
    source=f"{REFERENCE} B09; vLLM test_long_seed",
)
def seed_out_of_range(ctx: ApiContext) -> None:
    for seed in (2**63, -(2**63) - 1):
        client_error(ctx.api.post(CHAT, ctx.chat_body(max_tokens=4, seed=seed)), f"chat with seed={seed}")


@check(
    "B10.logprobs_limits",
    "top_logprobs / logprobs above 20, and top_logprobs without logprobs, answer 400 "
    "(streamed: before the stream or as one in-band error)",
    severity="MUST",
    requires=("logprobs",),
    faults=("accept_too_many_logprobs",),
    source=f"{REFERENCE} B10; vLLM test_too_many_chat_logprobs",
    deviations={"lmdeploy": "logprobs need --logprobs-mode: skipped (no logprobs feature)"},
)
def logprobs_limits(ctx: ApiContext) -> None:
    rejected(
        ctx.api.post(CHAT, ctx.chat_body(max_tokens=4, logprobs=True, top_logprobs=21)),
        "chat top_logprobs=21",
    )
    rejected(
        ctx.api.post(COMPLETIONS, ctx.completion_body(max_tokens=4, logprobs=21)), "completions logprobs=21"
    )
    rejected(
        ctx.api.post(CHAT, ctx.chat_body(max_tokens=4, logprobs=False, top_logprobs=3)),
        "chat top_logprobs=3 with logprobs=false",
    )
    stream = ctx.api.stream(CHAT, ctx.chat_body(max_tokens=4, logprobs=True, top_logprobs=21, stream=True))
    if stream.status == 200:
        errors = stream.stream.error_chunks
        expect(
            len(errors) == 1 and stream.stream.done,
            "streamed chat top_logprobs=21",
            desc("HTTP 400, or exactly one in-band error followed by [DONE]"),
            desc(f"HTTP 200 with {len(errors)} error chunk(s), done={stream.stream.done}"),
        )
    else:
        rejected(stream.as_reply(), "streamed chat top_logprobs=21")
    assert_alive(ctx, "after logprobs over the limit")


@check(
    "B11.unknown_fields_tolerated",
    "Unknown top-level and per-message fields are tolerated (200)",
    severity="SHOULD",
    faults=("reject_unknown_fields",),
    source=f"{REFERENCE} B11; vLLM test_extra_fields_allowed",
)
def unknown_fields_tolerated(ctx: ApiContext) -> None:
    messages = [{"role": "user", "content": ctx.task.question, "dsbench_note": "x"}]
    reply = ctx.api.post(CHAT, ctx.chat_body(messages=messages, max_tokens=4, dsbench_unknown=1))
    ok_json(reply, "chat with unknown fields")


@check(
    "B12.stream_options_without_stream",
    "stream_options without stream gives what the profile declares "
    "(400, or a plain JSON response), never an SSE stream or a 500",
    severity="SHOULD",
    faults=("accept_stream_options", "stream_options_starts_stream"),
    source=f"{REFERENCE} B12",
    deviations={"sglang": "ignores it (declared)", "lmdeploy": "ignores it (declared)"},
)
def stream_options_without_stream(ctx: ApiContext) -> None:
    reply = ctx.api.post(
        CHAT, ctx.chat_body(max_tokens=4, stream=False, stream_options={"include_usage": True})
    )
    if reply.content_type == "text/event-stream":
        fail("stream=false with stream_options", desc("no event stream"), desc(reply.describe()))
    if ctx.behaviour.stream_options_without_stream_rejected:
        if reply.status != 400:
            fail(
                f"stream=false with stream_options (engine profile {ctx.target.engine} declares "
                "stream_options_without_stream_rejected=True)",
                desc("HTTP 400"),
                desc(reply.describe()),
            )
    else:
        ok_json(
            reply, f"stream=false with stream_options (profile {ctx.target.engine} declares it is ignored)"
        )


@check(
    "B13.structured_output_bad_schema",
    "response_format json_schema without a schema, or with an invalid one, answers 400 not 500",
    severity="SHOULD",
    requires=("structured_output",),
    faults=("bad_schema_500", "invalid_schema_500"),
    source=f"{REFERENCE} B13; vLLM test_invalid_json_schema",
)
def structured_output_bad_schema(ctx: ApiContext) -> None:
    cases = [
        ("json_schema without a schema", {"type": "json_schema"}),
        (
            "an invalid JSON schema",
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 123}}},
        ),
    ]
    for what, fmt in cases:
        client_error(
            ctx.api.post(CHAT, ctx.chat_body(max_tokens=4, response_format=fmt)), f"chat with {what}"
        )


@check(
    "B14.invalid_token_ids",
    "Completions with negative or out-of-vocabulary prompt token ids answer 4xx",
    severity="SHOULD",
    faults=("bad_token_ids_500",),
    source=f"{REFERENCE} B14; vLLM test_negative_prompt_token_ids",
)
def invalid_token_ids(ctx: ApiContext) -> None:
    for ids in ([-1], [10**9]):
        client_error(
            ctx.api.post(COMPLETIONS, ctx.completion_body(ids, max_tokens=2)), f"completions prompt={ids}"
        )
    assert_alive(ctx, "after invalid token ids")


@check(
    "HW01.over_hw_max_model_len_rejected",
    "A prompt over the hw profile's max-model-len gets a clear 4xx "
    "(the deployment does not serve a longer context than the profile allows)",
    severity="MUST",
    faults=("max_model_len_larger_than_profile", "accept_overlong_prompt"),
    source="seed 004 (limits table: the server intercepts over-long requests, the client must handle it)",
)
def over_hw_max_model_len_rejected(ctx: ApiContext) -> None:
    limit = ctx.target.hw_max_model_len
    if limit is None:
        skip("the hw profile has no max_model_len")
    content = exact_chat_content(ctx.counter, limit + 1) if ctx.counter is not None else None
    reply = ctx.api.post(CHAT, ctx.chat_body(content or overlong_content(limit + 1), max_tokens=1))
    client_error(reply, f"prompt over the hw profile's max_model_len={limit}")
    expect(
        reply.error_message() is not None,
        "over-long prompt error",
        desc("a JSON error with a message"),
        desc(reply.describe()),
    )


@check(
    "HW02.over_max_input_len_rejected",
    "A prompt over the hw profile's max-input-len (but within the "
    "context) gets a clear 4xx where the deployment enforces max-input-len",
    severity="MUST",
    faults=("accept_over_max_input_len",),
    source="seed 004 (max-input-len per parallel layout)",
)
def over_max_input_len_rejected(ctx: ApiContext) -> None:
    limit = ctx.target.max_input_len
    if limit is None or not ctx.target.max_input_len_enforced:
        skip("the hw profile's deployment does not declare max_input_len_enforced = true")
    if limit + 1 >= ctx.target.max_model_len:
        skip(f"max_input_len={limit} is the context limit; B03 covers it")
    content = exact_chat_content(ctx.tokens(), limit + 1)
    if content is None:
        skip(f"could not build a prompt of exactly {limit + 1} tokens")
    reply = ctx.api.post(CHAT, ctx.chat_body(content, max_tokens=1))
    client_error(reply, f"prompt of max_input_len + 1 = {limit + 1} tokens")
    expect(
        reply.error_message() is not None,
        "over max-input-len error",
        desc("a JSON error with a message"),
        desc(reply.describe()),
    )
