"""F. Stop sequences: chosen from the engine's own greedy output, so they are known to occur."""

from __future__ import annotations

import re

from pytest_dsbench.conformance.catalog import REFERENCE, check
from pytest_dsbench.conformance.common import (
    THINK_FRAGMENTS,
    choice0,
    completion_reference,
    message_of,
    ok_json,
    ok_stream,
    r1_body,
    text_of,
)
from pytest_dsbench.conformance.context import ApiContext
from pytest_dsbench.conformance.expect import desc, expect, expect_eq, skip


def _reference_text(ctx: ApiContext) -> str:
    text = text_of(completion_reference(ctx))
    if len(text) < 12:
        skip(f"the reference completion is too short to choose stop strings from: {text!r}")
    return text


def _words(text: str) -> list[tuple[int, str]]:
    """(first position, word) of words of 2+ letters, in order of first occurrence, after 3 characters."""
    seen: dict[str, int] = {}
    for match in re.finditer(r"[A-Za-z]{2,}", text):
        if match.start() >= 3 and match.group() not in seen and text.find(match.group()) == match.start():
            seen[match.group()] = match.start()
    return [(pos, word) for word, pos in seen.items()]


def _mid_word(ctx: ApiContext) -> str:
    words = _words(_reference_text(ctx))
    if not words:
        skip("no word in the reference completion to use as a stop string")
    return words[len(words) // 2][1]


def _multi_token_stop(ctx: ApiContext) -> str:
    """A stop string of 2+ tokens that starts inside a token (not token-aligned)."""
    text = _reference_text(ctx)
    tokens: list[str] = []
    if "logprobs" in ctx.behaviour.features:
        body = ok_json(
            ctx.memo(
                "completion_reference_logprobs",
                lambda: ctx.completion(max_tokens=ctx.answer_max_tokens, logprobs=0),
            ),
            "completion with logprobs",
        )
        tokens = list((choice0(body, "completion").get("logprobs") or {}).get("tokens") or [])
    if "".join(tokens) == text and len(tokens) > 3:
        position = 0
        for i, token in enumerate(tokens[:-1]):
            if i >= 1 and len(token) >= 2 and tokens[i + 1].strip():
                candidate = token[1:] + tokens[i + 1]
                if text.find(candidate) == position + 1:
                    return candidate
            position += len(token)
    # No token list: a span of 5-8 characters (several tokens of a task text) from a third of the way in, moved
    # right until it neither starts nor ends with white space and occurs there first.
    for start in range(len(text) // 3, max(len(text) // 3, len(text) - 8)):
        for size in (5, 6, 7, 8):
            candidate = text[start : start + size]
            if candidate.strip() == candidate and text.find(candidate) == start:
                return candidate
    skip("could not choose a multi-token stop string from the reference completion")


def _check_cut(ctx: ApiContext, stop: list[str], expected: str, what: str) -> None:
    body = ok_json(ctx.completion(max_tokens=ctx.answer_max_tokens, stop=stop), what)
    text = text_of(body)
    expect_eq(text, expected, f"{what}: text (the reference up to the first stop string)")
    expect_eq(choice0(body, what).get("finish_reason"), "stop", f"{what} finish_reason")
    stream = ok_stream(ctx.completion_stream(max_tokens=ctx.answer_max_tokens, stop=stop), f"streamed {what}")
    streamed = "".join(c.text for c in stream.choices().values())
    expect_eq(streamed, expected, f"streamed {what}: joined text")


@check(
    "F01.stop_string_excluded",
    "A stop word from the greedy reference ends the output just before it "
    "(excluded), streamed and not, with finish_reason stop",
    severity="MUST",
    greedy_retries=2,
    faults=("stop_string_in_output", "stop_ignored"),
    source=f"{REFERENCE} F01; [vllm #1973](https://github.com/vllm-project/vllm/issues/1973)",
)
def stop_string_excluded(ctx: ApiContext) -> None:
    word = _mid_word(ctx)
    text = _reference_text(ctx)
    _check_cut(ctx, [word], text[: text.index(word)], f"completion with stop [{word!r}]")


@check(
    "F02.stop_multi_token",
    "A stop string of several tokens that starts inside a token is honoured and excluded",
    severity="MUST",
    greedy_retries=2,
    faults=("stop_single_token_only", "stop_ignored"),
    source=f"{REFERENCE} F02; [lmdeploy #1631](https://github.com/InternLM/lmdeploy/issues/1631)",
    deviations={"lmdeploy": "single-token stop words only"},
)
def stop_multi_token(ctx: ApiContext) -> None:
    stop = _multi_token_stop(ctx)
    text = _reference_text(ctx)
    if ctx.counter is not None:
        tokens = ctx.counter.text_tokens(stop, add_bos=False)
        expect(tokens >= 2, f"token count of the stop string {stop!r} (test setup)", desc(">= 2"), tokens)
    _check_cut(ctx, [stop], text[: text.index(stop)], f"completion with multi-token stop [{stop!r}]")


@check(
    "F03.stop_list_first_match",
    "With several stop strings the output ends before the one that occurs "
    "first, whatever its place in the list",
    severity="MUST",
    greedy_retries=2,
    faults=("stop_list_first_only",),
    source=f"{REFERENCE} F03",
)
def stop_list_first_match(ctx: ApiContext) -> None:
    text = _reference_text(ctx)
    words = _words(text)
    if len(words) < 3:
        skip("the reference completion has fewer than 3 distinct words")
    first = words[0][1]
    later = [w for _, w in words[1:] if first not in w][-2:]
    stop = [*reversed(later), first]
    _check_cut(ctx, stop, text[: text.index(first)], f"completion with stop {stop}")


@check(
    "F05.stop_stream_no_leak",
    "Streamed with a multi-token stop string, the joined deltas equal the "
    "non-streamed text and no delta leaks part of the stop string",
    severity="MUST",
    greedy_retries=2,
    faults=("stream_stop_leak",),
    source=f"{REFERENCE} F05; [vLLM PR #3672](https://github.com/vllm-project/vllm/pull/3672)",
)
def stop_stream_no_leak(ctx: ApiContext) -> None:
    stop = _multi_token_stop(ctx)
    plain = text_of(
        ok_json(ctx.completion(max_tokens=ctx.answer_max_tokens, stop=[stop]), "completion with stop")
    )
    stream = ok_stream(
        ctx.completion_stream(max_tokens=ctx.answer_max_tokens, stop=[stop]),
        f"streamed completion with stop [{stop!r}]",
    )
    choice = stream.choices().get(0)
    streamed = choice.text if choice else ""
    expect_eq(streamed, plain, f"streamed text with stop [{stop!r}] (the non-streamed text)")


@check(
    "F08.stop_with_reasoning",
    "R1 with an unreachable stop string answers exactly as without it; a stop "
    "string hit inside the reasoning leaves no think-tag fragment in content",
    severity="SHOULD",
    greedy_retries=2,
    requires=("reasoning",),
    faults=("stop_breaks_reasoning_split",),
    source=f"{REFERENCE} F08; [vllm #14170](https://github.com/vllm-project/vllm/issues/14170)",
)
def stop_with_reasoning(ctx: ApiContext) -> None:
    reference = message_of(r1_body(ctx), "chat")
    body = ok_json(ctx.chat(stop=["✿RESULT✿"]), "chat with an unreachable stop string")
    message = message_of(body, "chat with an unreachable stop string")
    for key in ("content", ctx.behaviour.reasoning_field):
        expect_eq(
            message.get(key),
            reference.get(key),
            f"chat with stop ['✿RESULT✿'] message.{key} (as without stop)",
        )
    reasoning = ctx.reasoning_of(reference) or ""
    words = _words(reasoning)
    if not words:
        return
    word = words[len(words) // 2][1]
    message = message_of(ok_json(ctx.chat(stop=[word]), f"chat with stop [{word!r}]"), "chat with stop")
    content = message.get("content") or ""
    leaked = [f for f in (*THINK_FRAGMENTS, "think>", "</think") if f in content]
    expect(
        not leaked,
        f"chat with stop [{word!r}] (in the reasoning) content",
        desc("no think-tag fragment"),
        content,
    )


def _inside_token_stop(ctx: ApiContext, text: str) -> tuple[int, str]:
    """(position, one-character stop string) in the middle of a word of the reference, at the character's first
    occurrence, preferably 3+ characters in and one the tokenizer shows to be a single token lying inside a
    longer token of the text (the case the check is about)."""
    head = text.split("</think>")[0]
    candidates = [
        (p, c) for p, c in enumerate(head) if p >= 1 and c.isalpha() and head[p - 1].isalpha() and text.find(c) == p
    ]
    candidates.sort(key=lambda pc: (pc[0] < 3, pc[0]))
    if not candidates:
        skip("no letter in the middle of a word of the reference completion to use as a stop string")
    counter = ctx.counter
    if counter is None:
        return candidates[0]
    total = counter.text_tokens(text, add_bos=False)
    fallback: tuple[int, str] | None = None
    for p, c in candidates:
        if counter.text_tokens(c, add_bos=False) != 1:
            continue
        if counter.text_tokens(text[:p], add_bos=False) + counter.text_tokens(text[p:], add_bos=False) > total:
            return p, c  # splitting the text here splits a token: the stop string lies inside it
        fallback = fallback or (p, c)
    if fallback is None:
        skip("no single-token letter in the middle of a word of the reference completion")
    return fallback


@check(
    "F04.stop_does_not_truncate_neighbouring_text",
    "A single-token stop string inside a longer token of the greedy reference "
    "cuts exactly before itself: the characters of that token before it are kept",
    severity="SHOULD",
    greedy_retries=2,
    faults=("stop_cuts_whole_token", "stop_string_in_output"),
    source=f"{REFERENCE} F04; LMDeploy Tokenizer.indexes_containing_token; "
    "[lmdeploy #1731](https://github.com/InternLM/lmdeploy/issues/1731)",
    deviations={"lmdeploy": "stops on any vocab token containing a rare stop string, cutting the token whole"},
)
def stop_does_not_truncate_neighbouring_text(ctx: ApiContext) -> None:
    text = _reference_text(ctx)
    position, stop = _inside_token_stop(ctx, text)
    body = ok_json(ctx.completion(max_tokens=ctx.answer_max_tokens, stop=[stop]), f"completion with stop [{stop!r}]")
    expect_eq(
        text_of(body),
        text[:position],
        f"completion with stop [{stop!r}] (inside the word {_word_at(text, position)!r}): text "
        "(the reference up to the stop string)",
    )
    expect_eq(
        choice0(body, "completion").get("finish_reason"), "stop", f"completion with stop [{stop!r}] finish_reason"
    )


def _word_at(text: str, position: int) -> str:
    start = position
    while start > 0 and text[start - 1].isalnum():
        start -= 1
    end = position
    while end < len(text) and text[end].isalnum():
        end += 1
    return text[start:end]
