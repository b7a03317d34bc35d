"""C. Non-streamed response schema; D. usage accounting."""

from __future__ import annotations

import time
from typing import Any

from pytest_dsbench.conformance.catalog import REFERENCE, check
from pytest_dsbench.conformance.common import (
    OPENAI_FINISH_REASONS,
    choice0,
    completion_reference,
    consistent_usage,
    message_of,
    ok_json,
    r1_body,
    text_of,
    truncated_reply,
    usage_of,
)
from pytest_dsbench.conformance.context import ApiContext
from pytest_dsbench.conformance.expect import desc, expect, expect_eq, fail


def _sdk_validate(kind: str, body: dict[str, Any], what: str) -> None:
    """Second opinion from the openai SDK's own models, when the SDK is installed."""
    try:
        from openai.types import Completion
        from openai.types.chat import ChatCompletion
    except ImportError:
        return
    model = ChatCompletion if kind == "chat" else Completion
    try:
        model.model_validate(body)
    except Exception as exc:
        fail(
            f"{what}: openai SDK {model.__name__} validation",
            desc("a body the SDK accepts"),
            str(exc).splitlines()[0:3],
        )


@check(
    "C01.chat_response_schema",
    "A chat completion has the OpenAI shape: id, object chat.completion, int "
    "created near now, model, indexed choices with an assistant message and finish_reason, usage",
    severity="MUST",
    faults=("chat_object_wrong", "created_not_int", "missing_usage", "choice_index_wrong"),
    source=f"{REFERENCE} C01; vLLM test_single_chat_session",
)
def chat_response_schema(ctx: ApiContext) -> None:
    body = r1_body(ctx)
    what = "chat completion"
    expect(
        isinstance(body.get("id"), str) and body["id"] != "",
        f"{what} 'id'",
        desc("a non-empty string"),
        body.get("id"),
    )
    expect_eq(body.get("object"), "chat.completion", f"{what} 'object'")
    created = body.get("created")
    expect(
        isinstance(created, int) and abs(created - time.time()) < 300,
        f"{what} 'created'",
        desc("an integer Unix time within 5 minutes of now"),
        created,
    )
    expect(isinstance(body.get("model"), str), f"{what} 'model'", desc("a string"), body.get("model"))
    choices = body.get("choices")
    expect(
        isinstance(choices, list) and len(choices) == 1, f"{what} choices (n=1)", desc("one choice"), choices
    )
    assert isinstance(choices, list)
    choice = choices[0]
    expect_eq(choice.get("index"), 0, f"{what} choices[0].index")
    message = choice.get("message") or {}
    expect_eq(message.get("role"), "assistant", f"{what} message.role")
    expect(
        message.get("content") is None or isinstance(message.get("content"), str),
        f"{what} message.content",
        desc("a string or null"),
        message.get("content"),
    )
    expect(choice.get("finish_reason") is not None, f"{what} finish_reason", desc("non-null"), None)
    usage_of(body, what)
    _sdk_validate("chat", body, what)


@check(
    "C02.completion_response_schema",
    "A text completion has object text_completion, indexed choices with "
    "text, logprobs null unless asked, finish_reason stop/length",
    severity="MUST",
    faults=("completion_object_wrong", "logprobs_always", "missing_usage"),
    source=f"{REFERENCE} C02",
)
def completion_response_schema(ctx: ApiContext) -> None:
    body = ok_json(ctx.completion(max_tokens=8), "completion")
    expect_eq(body.get("object"), "text_completion", "completion 'object'")
    choice = choice0(body, "completion")
    expect_eq(choice.get("index"), 0, "completion choices[0].index")
    expect(
        isinstance(choice.get("text"), str),
        "completion choices[0].text",
        desc("a string"),
        choice.get("text"),
    )
    expect(choice.get("logprobs") is None, "completion logprobs without asking", None, choice.get("logprobs"))
    expect(
        choice.get("finish_reason") in ("stop", "length", "content_filter"),
        "completion finish_reason",
        desc("stop, length or content_filter"),
        choice.get("finish_reason"),
    )
    usage_of(body, "completion")
    _sdk_validate("completion", body, "completion")


@check(
    "C03.finish_reason_vocabulary",
    "finish_reason of natural ends and truncations is an OpenAI value",
    severity="SHOULD",
    faults=("finish_reason_nonstandard",),
    source=f"{REFERENCE} C03",
    deviations={"lmdeploy": "may emit parse_error/error/abort", "sglang": "may emit abort"},
)
def finish_reason_vocabulary(ctx: ApiContext) -> None:
    bodies = {
        "natural chat end": r1_body(ctx),
        "truncated chat": ok_json(truncated_reply(ctx), "truncated chat"),
        "completion": completion_reference(ctx),
    }
    for what, body in bodies.items():
        reason = choice0(body, what).get("finish_reason")
        expect(
            reason in OPENAI_FINISH_REASONS,
            f"{what} finish_reason",
            desc(" / ".join(OPENAI_FINISH_REASONS)),
            reason,
        )


@check(
    "C06.ids_unique",
    "Response ids differ between requests",
    severity="SHOULD",
    faults=("constant_response_id",),
    source=f"{REFERENCE} C06",
)
def ids_unique(ctx: ApiContext) -> None:
    ids = [ok_json(ctx.chat(max_tokens=2), "chat").get("id") for _ in range(4)]
    expect(len(set(ids)) == len(ids), "ids of 4 chat responses", desc("4 distinct ids"), ids)


@check(
    "D01.usage_present_and_consistent",
    "usage has non-negative prompt/completion/total tokens and total = prompt + completion",
    severity="MUST",
    faults=("usage_total_wrong", "missing_usage"),
    source=f"{REFERENCE} D01; vLLM test_usage_policy",
)
def usage_present_and_consistent(ctx: ApiContext) -> None:
    for what, body in (("chat", r1_body(ctx)), ("completion", completion_reference(ctx))):
        consistent_usage(usage_of(body, what), what)


@check(
    "D02.usage_completion_equals_max_tokens_on_length",
    "Cut by max_tokens, completion_tokens equals max_tokens exactly (chat: R1 still reasoning; completions)",
    severity="MUST",
    faults=("usage_off_by_one", "finish_reason_stop_on_length"),
    source=f"{REFERENCE} D02; vLLM test_single_completion; "
    "[sglang #39826](https://github.com/sgl-project/sglang/issues/39826)",
)
def usage_completion_equals_max_tokens_on_length(ctx: ApiContext) -> None:
    for what, reply, limit in (
        ("chat max_tokens=5", ctx.chat(max_tokens=5), 5),
        ("completion max_tokens=7", ctx.completion(max_tokens=7), 7),
    ):
        body = ok_json(reply, what)
        expect_eq(choice0(body, what).get("finish_reason"), "length", f"{what} finish_reason")
        expect_eq(usage_of(body, what)["completion_tokens"], limit, f"{what} usage.completion_tokens")


@check(
    "D04.usage_prompt_tokens_completions_exact",
    "Completions prompt_tokens equals the tokenizer's count "
    "(bos included) for a text prompt, a token-id prompt and the sum over a list of prompts",
    severity="MUST",
    faults=("completion_double_bos", "prompt_list_usage_first_only"),
    source=f"{REFERENCE} D04; SGLang run_completion",
)
def usage_prompt_tokens_completions_exact(ctx: ApiContext) -> None:
    counter = ctx.tokens()
    prompt = ctx.task.completion_prompt
    expected = counter.text_tokens(prompt, add_bos=True)
    body = ok_json(ctx.completion(prompt, max_tokens=2), "completion")
    expect_eq(
        usage_of(body, "completion")["prompt_tokens"],
        expected,
        f"completion usage.prompt_tokens ({counter.source}, bos included)",
    )
    ids = counter.text_ids(prompt, add_bos=True)
    body = ok_json(ctx.completion(ids, max_tokens=2), "completion with token ids")
    expect_eq(
        usage_of(body, "token-id completion")["prompt_tokens"],
        len(ids),
        "token-id completion usage.prompt_tokens (number of ids)",
    )
    other = ctx.tasks[1 % len(ctx.tasks)].question
    both = expected + counter.text_tokens(other, add_bos=True)
    body = ok_json(ctx.completion([prompt, other], max_tokens=2), "completion of two prompts")
    expect_eq(
        usage_of(body, "two-prompt completion")["prompt_tokens"],
        both,
        "two-prompt completion usage.prompt_tokens (sum of both prompts)",
    )


@check(
    "D05.usage_prompt_tokens_chat_exact",
    "Chat prompt_tokens equals the tokenizer's count of the rendered "
    "template (system + user, generation prompt), proving a single bos",
    severity="MUST",
    faults=("double_bos", "system_dropped"),
    source=f"{REFERENCE} D05; vLLM test_single_chat_session; "
    "[DeepSeek-R1 #151](https://github.com/deepseek-ai/DeepSeek-R1/issues/151)",
)
def usage_prompt_tokens_chat_exact(ctx: ApiContext) -> None:
    counter = ctx.tokens()
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": ctx.task.question},
    ]
    expected = counter.chat_tokens(messages)
    body = ok_json(
        ctx.api.post("/v1/chat/completions", ctx.chat_body(messages=messages, max_tokens=2)), "chat"
    )
    expect_eq(
        usage_of(body, "chat")["prompt_tokens"],
        expected,
        f"chat usage.prompt_tokens (template rendered by {counter.source})",
    )


@check(
    "D06.usage_n_gt_1",
    "With n=3 the prompt is counted once and completion_tokens is the sum over the choices",
    severity="MUST",
    requires=("n",),
    faults=("usage_prompt_counted_per_choice", "n_ignored"),
    source=f"{REFERENCE} D06; LMDeploy test_n_completions",
)
def usage_n_gt_1(ctx: ApiContext) -> None:
    single = usage_of(ok_json(ctx.chat(max_tokens=6), "chat n=1"), "chat n=1")
    body = ok_json(ctx.chat(max_tokens=6, n=3, temperature=0.7), "chat n=3")
    usage = usage_of(body, "chat n=3")
    expect_eq(usage["prompt_tokens"], single["prompt_tokens"], "n=3 usage.prompt_tokens (same as n=1)")
    reasons = [c.get("finish_reason") for c in body.get("choices", [])]
    if len(reasons) != 3 or any(r != "length" for r in reasons):
        fail("n=3 with max_tokens=6 (R1 still reasoning)", desc("3 choices finished by length"), reasons)
    expect_eq(usage["completion_tokens"], 18, "n=3 usage.completion_tokens (3 choices x 6 tokens)")


def _reasoning_count(ctx: ApiContext, usage: dict[str, Any]) -> Any:
    if ctx.behaviour.reasoning_usage_path == "reasoning_tokens":
        return usage.get("reasoning_tokens")
    details = usage.get("completion_tokens_details") or {}
    return details.get("reasoning_tokens") if isinstance(details, dict) else None


@check(
    "D07.usage_reasoning_tokens",
    "The reasoning token count (at the profile's usage path) is > 0, <= "
    "completion_tokens and matches the reasoning text",
    severity="SHOULD",
    requires=("reasoning",),
    faults=("reasoning_tokens_missing", "reasoning_tokens_exceed_completion", "reasoning_tokens_zero"),
    source=f"{REFERENCE} D07; [sglang #39826](https://github.com/sgl-project/sglang/issues/39826)",
    deviations={"sglang": "top-level usage.reasoning_tokens, counts </think> (declared)"},
)
def usage_reasoning_tokens(ctx: ApiContext) -> None:
    body = r1_body(ctx)
    usage = usage_of(body, "chat")
    count = _reasoning_count(ctx, usage)
    path = ctx.behaviour.reasoning_usage_path
    expect(
        isinstance(count, int) and count > 0,
        f"usage.{path} (engine profile {ctx.target.engine})",
        desc("a positive integer"),
        count,
    )
    expect(
        count <= usage["completion_tokens"],
        f"usage.{path}",
        f"<= completion_tokens={usage['completion_tokens']}",
        count,
    )
    reasoning = ctx.reasoning_of((body["choices"][0] or {}).get("message") or {})
    if ctx.counter is None or not reasoning:
        return  # range checked; without a token counter the exact count cannot be
    counted = ctx.counter.text_tokens(reasoning, add_bos=False) + (
        1 if ctx.behaviour.reasoning_count_includes_end_tag else 0
    )
    expect(
        abs(count - counted) <= 2,
        f"usage.{path} vs the reasoning text ({ctx.counter.source})",
        f"{counted} +- 2",
        count,
    )


def _count_tolerance(count: int) -> int:
    """Re-tokenising detokenised text is not exact: +-2 (``</think>``, EOS) plus 1 % for long outputs."""
    return max(2, count // 100)


@check(
    "D03.usage_completion_matches_output",
    "completion_tokens matches the tokenizer's count of the returned text "
    "(chat: reasoning + </think> + content; completions: text), within +-2 (1 % for long outputs)",
    severity="SHOULD",
    faults=("usage_counts_draft_tokens",),
    source=f"{REFERENCE} D03; [sglang #39826](https://github.com/sgl-project/sglang/issues/39826)",
)
def usage_completion_matches_output(ctx: ApiContext) -> None:
    counter = ctx.tokens()
    chat = r1_body(ctx)
    message = message_of(chat, "chat")
    reasoning = ctx.reasoning_of(message) or ""
    content = str(message.get("content") or "")
    chat_count = counter.text_tokens(reasoning, add_bos=False) + counter.text_tokens(content, add_bos=False)
    if reasoning and content:
        chat_count += 1  # the </think> the reasoning parser removed
    completion = completion_reference(ctx)
    for what, body, counted in (
        ("chat", chat, chat_count),
        ("completion", completion, counter.text_tokens(text_of(completion), add_bos=False)),
    ):
        reported = usage_of(body, what)["completion_tokens"]
        margin = _count_tolerance(counted)
        expect(
            abs(reported - counted) <= margin,
            f"{what} usage.completion_tokens vs the returned text ({counter.source})",
            f"{counted} +- {margin}",
            reported,
        )
