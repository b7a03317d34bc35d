"""E. Length control and finish_reason."""

from __future__ import annotations

from pytest_dsbench.conformance.catalog import REFERENCE, check
from pytest_dsbench.conformance.common import (
    choice0,
    completion_reference,
    ok_json,
    ok_stream,
    r1_body,
    text_of,
    usage_of,
)
from pytest_dsbench.conformance.context import DROP, REASONING_KEYS, ApiContext
from pytest_dsbench.conformance.expect import desc, expect, expect_eq


@check(
    "E01.finish_length_when_truncated",
    "Output cut by max_tokens=8 reports finish_reason length and is not "
    "empty (chat and completions, streamed and not)",
    severity="MUST",
    faults=("finish_reason_stop_on_length", "empty_output_on_length"),
    source=f"{REFERENCE} E01; [lmdeploy #1589](https://github.com/InternLM/lmdeploy/issues/1589)",
)
def finish_length_when_truncated(ctx: ApiContext) -> None:
    chat = ok_json(ctx.chat(max_tokens=8), "chat max_tokens=8")
    choice = choice0(chat, "chat max_tokens=8")
    expect_eq(choice.get("finish_reason"), "length", "chat max_tokens=8 finish_reason")
    message = choice.get("message") or {}
    produced = "".join(str(message.get(k) or "") for k in ("content", *REASONING_KEYS))
    expect(produced != "", "chat max_tokens=8 output", desc("non-empty content or reasoning"), message)
    completion = ok_json(ctx.completion(max_tokens=8), "completion max_tokens=8")
    expect_eq(
        choice0(completion, "completion").get("finish_reason"),
        "length",
        "completion max_tokens=8 finish_reason",
    )
    expect(text_of(completion) != "", "completion max_tokens=8 text", desc("non-empty"), text_of(completion))
    for what, stream in (
        ("streamed chat max_tokens=8", ctx.chat_stream(max_tokens=8)),
        ("streamed completion max_tokens=8", ctx.completion_stream(max_tokens=8)),
    ):
        choices = ok_stream(stream, what).choices()
        reasons = [r for c in choices.values() for r in c.finish_reasons]
        expect_eq(reasons, ["length"], f"{what} finish_reason(s)")
        produced = "".join(c.text + "".join(c.fields.values()) for c in choices.values())
        expect(produced != "", f"{what} output", desc("non-empty deltas"), produced)


@check(
    "E02.finish_stop_on_natural_end",
    "A natural end (EOS or a stop string) reports finish_reason stop with fewer than max_tokens tokens",
    severity="MUST",
    faults=("finish_reason_length_on_stop",),
    source=f"{REFERENCE} E02; SGLang test_matched_stop",
)
def finish_stop_on_natural_end(ctx: ApiContext) -> None:
    chat = r1_body(ctx)
    expect_eq(
        choice0(chat, "chat").get("finish_reason"),
        "stop",
        f"chat of the probe question (max_tokens={ctx.answer_max_tokens}) finish_reason",
    )
    expect(
        usage_of(chat, "chat")["completion_tokens"] < ctx.answer_max_tokens,
        "chat completion_tokens",
        f"< max_tokens={ctx.answer_max_tokens}",
        chat["usage"]["completion_tokens"],
    )
    body = ok_json(ctx.completion(max_tokens=ctx.answer_max_tokens, stop=["."]), "completion with stop ['.']")
    expect_eq(
        choice0(body, "completion").get("finish_reason"), "stop", "completion with stop ['.'] finish_reason"
    )


@check(
    "E03.max_completion_tokens_honoured",
    "max_completion_tokens limits the output, alone and when it is smaller than max_tokens",
    severity="MUST",
    faults=("ignore_max_completion_tokens",),
    source=f"{REFERENCE} E03",
)
def max_completion_tokens_honoured(ctx: ApiContext) -> None:
    for what, params in (
        ("max_completion_tokens=6", {"max_tokens": DROP, "max_completion_tokens": 6}),
        ("max_tokens=50, max_completion_tokens=6", {"max_tokens": 50, "max_completion_tokens": 6}),
    ):
        body = ok_json(ctx.chat(**params), f"chat {what}")
        used = usage_of(body, what)["completion_tokens"]
        expect(used <= 6, f"chat {what} usage.completion_tokens", desc("<= 6"), used)
        expect_eq(choice0(body, what).get("finish_reason"), "length", f"chat {what} finish_reason")


@check(
    "E04.max_tokens_includes_reasoning",
    "max_tokens bounds reasoning + answer together",
    severity="MUST",
    faults=("max_tokens_excludes_reasoning",),
    source=f"{REFERENCE} E04; DeepSeek API reasoning guide",
)
def max_tokens_includes_reasoning(ctx: ApiContext) -> None:
    full = usage_of(r1_body(ctx), "chat")["completion_tokens"]
    limit = max(2, full - 2)
    body = ok_json(ctx.chat(max_tokens=limit), f"chat max_tokens={limit}")
    used = usage_of(body, "chat")["completion_tokens"]
    expect(
        used <= limit,
        f"chat max_tokens={limit} (the full answer takes {full}) usage.completion_tokens",
        f"<= {limit}",
        used,
    )


@check(
    "E05.completions_default_max_tokens",
    "Completions without max_tokens stop at OpenAI's default of 16 tokens",
    severity="SHOULD",
    faults=("completions_default_unbounded",),
    source=f"{REFERENCE} E05",
)
def completions_default_max_tokens(ctx: ApiContext) -> None:
    body = ok_json(ctx.completion(max_tokens=DROP), "completion without max_tokens")
    used = usage_of(body, "completion")["completion_tokens"]
    expect(used <= 16, "completion without max_tokens usage.completion_tokens", desc("<= 16"), used)


@check(
    "E06.ignore_eos",
    "ignore_eos=true generates exactly max_tokens tokens and reports length",
    severity="EXT",
    requires=("ignore_eos",),
    faults=("ignore_eos_ignored",),
    source=f"{REFERENCE} E06; SGLang test_openai_server_ignore_eos",
)
def ignore_eos(ctx: ApiContext) -> None:
    natural = usage_of(completion_reference(ctx), "completion")["completion_tokens"]
    limit = natural + 16
    body = ok_json(
        ctx.completion(max_tokens=limit, ignore_eos=True), f"completion ignore_eos max_tokens={limit}"
    )
    expect_eq(choice0(body, "completion").get("finish_reason"), "length", "ignore_eos finish_reason")
    expect_eq(
        usage_of(body, "completion")["completion_tokens"],
        limit,
        f"ignore_eos usage.completion_tokens (the natural end is at {natural})",
    )


@check(
    "E07.min_tokens",
    "min_tokens (min_new_tokens on LMDeploy) keeps generating past the natural end",
    severity="EXT",
    requires=("min_tokens",),
    faults=("min_tokens_ignored",),
    source=f"{REFERENCE} E07",
)
def min_tokens(ctx: ApiContext) -> None:
    natural = usage_of(completion_reference(ctx), "completion")["completion_tokens"]
    wanted = natural + 8
    name = ctx.behaviour.min_tokens_param or "min_tokens"
    body = ok_json(ctx.completion(max_tokens=wanted + 16, **{name: wanted}), f"completion {name}={wanted}")
    used = usage_of(body, "completion")["completion_tokens"]
    expect(
        used >= wanted,
        f"completion {name}={wanted} (the natural end is at {natural}) completion_tokens",
        f">= {wanted}",
        used,
    )
