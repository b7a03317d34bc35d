"""N. Reasoning output (DeepSeek-R1): the field, its separation from content, streaming, truncation, history.

Reference parser semantics (vLLM ``deepseek_r1``, SGLang ``deepseek-r1``, LMDeploy ``default``): output
``A</think>B`` gives reasoning ``A`` and content ``B``; without ``</think>`` everything is reasoning and
content is null. Streaming cannot strip a leading newline, so stream and non-stream are compared after
``strip()``.
"""

from __future__ import annotations

from typing import Any

from pytest_dsbench.conformance.catalog import REFERENCE, check
from pytest_dsbench.conformance.common import (
    THINK_FRAGMENTS,
    choice0,
    message_of,
    ok_json,
    ok_stream,
    other_reasoning_key,
    r1_body,
    r1_stream,
    truncated_reply,
    truncated_stream,
    usage_of,
)
from pytest_dsbench.conformance.context import ApiContext
from pytest_dsbench.conformance.expect import desc, expect, expect_eq, fail

RENAME_LINK = "https://github.com/vllm-project/vllm/pull/27752"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


@check(
    "N00.reasoning_field_matches_profile",
    "An R1 answer carries its reasoning under the key the engine "
    "profile declares (vLLM 'reasoning', others 'reasoning_content'), streamed and not",
    severity="MUST",
    requires=("reasoning",),
    faults=("reasoning_field_renamed", "no_reasoning_split"),
    source=f"{REFERENCE} §1 harness consequence; [vLLM PR #27752]({RENAME_LINK})",
    deviations={
        "vllm": "'reasoning' (declared)",
        "sglang": "'reasoning_content' (declared)",
        "lmdeploy": "'reasoning_content' (declared)",
    },
)
def reasoning_field_matches_profile(ctx: ApiContext) -> None:
    declared = ctx.behaviour.reasoning_field
    other = other_reasoning_key(declared)
    who = f"engine profile {ctx.target.engine} declares reasoning_field={declared!r}"
    message = message_of(r1_body(ctx), "chat")
    if not _text(message.get(declared)):
        if _text(message.get(other)):
            fail(
                f"{who}, but the server put the reasoning in {other!r} (renamed field; see {RENAME_LINK})",
                f"message.{declared}",
                f"message.{other}",
            )
        if "</think>" in _text(message.get("content")):
            fail(
                f"{who}, but the reasoning is not separated (was the server launched with a reasoning "
                "parser?)",
                f"message.{declared}",
                desc(f"'</think>' inside content: {message.get('content')!r}"),
            )
        fail(who, desc(f"a non-empty message.{declared}"), message)
    choice = ok_stream(r1_stream(ctx), "streamed chat").choices().get(0)
    fields = choice.fields if choice else {}
    if not fields.get(declared) and fields.get(other):
        fail(
            f"{who}, but the stream sends reasoning deltas as {other!r}",
            f"delta.{declared}",
            f"delta.{other}",
        )
    expect(bool(fields.get(declared)), f"{who}: streamed reasoning", desc(f"delta.{declared} pieces"), fields)


@check(
    "N01.reasoning_present_and_separated",
    "R1 gives a non-empty reasoning and a content with the answer, finish_reason stop",
    severity="MUST",
    requires=("reasoning",),
    faults=("no_reasoning_split", "reasoning_field_renamed"),
    source=f"{REFERENCE} N01; [vllm #13375](https://github.com/vllm-project/vllm/issues/13375)",
)
def reasoning_present_and_separated(ctx: ApiContext) -> None:
    body = r1_body(ctx)
    message = message_of(body, "chat")
    reasoning = ctx.reasoning_of(message)
    expect(
        bool(reasoning and reasoning.strip()),
        f"message.{ctx.behaviour.reasoning_field}",
        desc("non-empty reasoning"),
        reasoning,
    )
    content = _text(message.get("content"))
    expect(
        ctx.task.answer in content,
        "message.content",
        desc(f"the answer {ctx.task.answer!r} to {ctx.task.question!r}"),
        content,
    )
    expect_eq(choice0(body, "chat").get("finish_reason"), "stop", "R1 answer finish_reason")


def _leaks(content: str, reasoning: str) -> list[str]:
    problems = [f"content contains {frag!r}" for frag in THINK_FRAGMENTS if frag in content]
    stripped = content.lstrip()
    problems += [
        f"content starts with {frag!r}" for frag in ("think>", "/think>") if stripped.startswith(frag)
    ]
    if reasoning.lstrip().startswith("<think>"):
        problems.append("reasoning starts with '<think>'")
    if reasoning.rstrip().endswith("</think>"):
        problems.append("reasoning ends with '</think>'")
    return problems


@check(
    "N02.reasoning_no_tag_leak",
    "No <think>/</think> (or fragments) in content, and the reasoning is not "
    "wrapped in the tags, streamed and not",
    severity="MUST",
    requires=("reasoning",),
    faults=("think_tag_in_content", "stream_end_think_in_content"),
    source=f"{REFERENCE} N02; [lmdeploy #3321](https://github.com/InternLM/lmdeploy/issues/3321); "
    "[vllm #14170](https://github.com/vllm-project/vllm/issues/14170)",
)
def reasoning_no_tag_leak(ctx: ApiContext) -> None:
    key = ctx.behaviour.reasoning_field
    message = message_of(r1_body(ctx), "chat")
    problems = _leaks(_text(message.get("content")), _text(message.get(key)))
    expect(not problems, "non-streamed R1 message", desc("no think tags in content"), problems)
    choice = ok_stream(r1_stream(ctx), "streamed chat").choices().get(0)
    if choice is not None:
        problems = _leaks(choice.field_text("content"), choice.field_text(key))
        expect(not problems, "streamed R1 deltas", desc("no think tags in content"), problems)


@check(
    "N03.reasoning_stream_equals_nonstream",
    "Streamed reasoning and content (stripped) equal the non-streamed ones",
    severity="MUST",
    greedy_retries=2,
    requires=("reasoning",),
    faults=("stream_reasoning_differs", "stream_end_think_in_content"),
    source=f"{REFERENCE} N03",
)
def reasoning_stream_equals_nonstream(ctx: ApiContext) -> None:
    key = ctx.behaviour.reasoning_field
    message = message_of(r1_body(ctx), "chat")
    choice = ok_stream(r1_stream(ctx), "streamed chat").choices().get(0)
    expect(choice is not None, "streamed chat", desc("choice 0"), None)
    assert choice is not None
    for name in (key, "content"):
        expect_eq(
            choice.field_text(name).strip(),
            _text(message.get(name)).strip(),
            f"streamed {name} (stripped), the non-streamed message.{name}",
        )


@check(
    "N04.reasoning_stream_ordering",
    "Every reasoning delta comes before the first content delta",
    severity="SHOULD",
    greedy_retries=2,
    requires=("reasoning",),
    faults=("reasoning_interleaved",),
    source=f"{REFERENCE} N04",
)
def reasoning_stream_ordering(ctx: ApiContext) -> None:
    key = ctx.behaviour.reasoning_field
    choice = ok_stream(r1_stream(ctx), "streamed chat").choices().get(0)
    kinds = [kind for kind, _ in (choice.sequence if choice else [])]
    if "content" in kinds:
        late = [i for i, kind in enumerate(kinds) if kind == key and i > kinds.index("content")]
        expect(
            not late,
            "streamed R1 delta order",
            desc("reasoning, then content"),
            desc(
                f"reasoning delta(s) at position(s) {late[:5]} after content started at "
                f"{kinds.index('content')}"
            ),
        )


@check(
    "N05.reasoning_truncated_by_length",
    "R1 cut by max_tokens inside its reasoning: 200, finish_reason "
    "length, reasoning kept, content null or empty (not a copy), stream ends with [DONE]",
    severity="MUST",
    requires=("reasoning",),
    faults=("finish_reason_stop_on_length", "content_copies_reasoning_on_length"),
    source=f"{REFERENCE} N05; [vllm #52640](https://github.com/vllm-project/vllm/issues/52640); "
    "[vllm-ascend #9131](https://github.com/vllm-project/vllm-ascend/issues/9131)",
)
def reasoning_truncated_by_length(ctx: ApiContext) -> None:
    key = ctx.behaviour.reasoning_field
    body = ok_json(truncated_reply(ctx), "chat max_tokens=8")
    message = message_of(body, "chat max_tokens=8")
    expect_eq(choice0(body, "chat").get("finish_reason"), "length", "R1 cut at max_tokens=8 finish_reason")
    expect(
        bool(_text(message.get(key))),
        f"R1 cut at max_tokens=8 message.{key}",
        desc("the partial reasoning"),
        message.get(key),
    )
    expect(
        not _text(message.get("content")),
        "R1 cut at max_tokens=8 message.content",
        desc("null or ''"),
        message.get("content"),
    )
    expect_eq(usage_of(body, "chat")["completion_tokens"], 8, "R1 cut at max_tokens=8 completion_tokens")
    stream = ok_stream(truncated_stream(ctx), "streamed chat max_tokens=8")
    choice = stream.choices().get(0)
    expect(
        choice is not None and choice.finish_reasons == ["length"],
        "streamed R1 cut at max_tokens=8",
        desc("finish_reason ['length']"),
        choice.finish_reasons if choice else None,
    )
    assert choice is not None
    expect(
        bool(choice.field_text(key)) and not choice.field_text("content").strip(),
        "streamed R1 cut at max_tokens=8 deltas",
        desc(f"{key} deltas and no content"),
        choice.fields,
    )


@check(
    "N09.reasoning_history_not_replayed",
    "Assistant history with content only, with '<think>…</think>' "
    "before it, or with a reasoning field is accepted and costs the same prompt tokens (the template drops "
    "the old reasoning)",
    severity="SHOULD",
    requires=("reasoning",),
    faults=("history_reasoning_replayed",),
    source=f"{REFERENCE} N09; DeepSeek reasoning-model guide",
)
def reasoning_history_not_replayed(ctx: ApiContext) -> None:
    first, second = ctx.tasks[0], ctx.tasks[1 % len(ctx.tasks)]
    variants = {
        "content only": {"role": "assistant", "content": first.answer},
        "think block in content": {
            "role": "assistant",
            "content": f"<think>\nI know this.\n</think>{first.answer}",
        },
        "reasoning field": {
            "role": "assistant",
            "content": first.answer,
            ctx.behaviour.reasoning_field: "I know.",
        },
    }
    counts: dict[str, int] = {}
    for what, assistant in variants.items():
        messages = [
            {"role": "user", "content": first.question},
            assistant,
            {"role": "user", "content": second.question},
        ]
        reply = ctx.api.post("/v1/chat/completions", ctx.chat_body(messages=messages, max_tokens=2))
        if what == "reasoning field" and reply.status == 400:
            continue  # DeepSeek's own API rejects reasoning in the input: allowed
        counts[what] = usage_of(ok_json(reply, f"two-turn chat, history with {what}"), what)["prompt_tokens"]
    expect(
        len(set(counts.values())) == 1,
        "prompt_tokens of the same history written three ways",
        desc("equal"),
        counts,
    )
