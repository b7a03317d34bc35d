"""O. Prompt construction and the chat template (bos, generation prompt, content parts, system, turns)."""

from __future__ import annotations

from typing import Any

from pytest_dsbench.conformance.catalog import REFERENCE, check
from pytest_dsbench.conformance.common import message_of, ok_json, r1_body, usage_of
from pytest_dsbench.conformance.context import REASONING_KEYS, ApiContext
from pytest_dsbench.conformance.expect import desc, expect, expect_eq, skip
from pytest_dsbench.conformance.tokens import EngineTokenizer

CHAT = "/v1/chat/completions"


def _prompt_tokens(ctx: ApiContext, messages: list[dict[str, Any]], what: str) -> int:
    body = ok_json(ctx.api.post(CHAT, ctx.chat_body(messages=messages, max_tokens=2)), what)
    return int(usage_of(body, what)["prompt_tokens"])


@check(
    "O01.single_bos",
    "The served chat prompt starts with exactly one bos: prompt_tokens equals the "
    "template count, and the engine's tokenized chat has one bos",
    severity="MUST",
    faults=("double_bos",),
    source=f"{REFERENCE} O01; [DeepSeek-R1 #151](https://github.com/deepseek-ai/DeepSeek-R1/issues/151); "
    "[vLLM PR #38187](https://github.com/vllm-project/vllm/pull/38187)",
)
def single_bos(ctx: ApiContext) -> None:
    counter = ctx.tokens()
    messages = [{"role": "user", "content": ctx.task.question}]
    expect_eq(
        _prompt_tokens(ctx, messages, "chat"),
        counter.chat_tokens(messages),
        f"chat usage.prompt_tokens (template count by {counter.source}; one more means a double bos)",
    )
    if ctx.behaviour.tokenize_api == "vllm":
        engine = EngineTokenizer(ctx.api, ctx.target.model)
        ids = engine.chat_ids(messages)
        bos = counter.bos_id()
        if bos is not None:
            expect(
                ids[:1] == [bos] and ids.count(bos) == 1,
                "the engine's tokenized chat prompt (POST /tokenize)",
                desc(f"exactly one bos id {bos}, first"),
                desc(f"{ids.count(bos)} bos id(s), starts {ids[:3]}"),
            )


@check(
    "O02.generation_prompt_matches_template",
    "The engine renders the chat prompt exactly as the model's "
    "own template (R1: ending in '<｜Assistant｜><think>\\n')",
    severity="SHOULD",
    requires=("tokenize",),
    faults=("stale_template", "double_bos"),
    source=f"{REFERENCE} O02; [DeepSeek-R1 #350](https://github.com/deepseek-ai/DeepSeek-R1/issues/350)",
)
def generation_prompt_matches_template(ctx: ApiContext) -> None:
    counter = ctx.tokens()
    if isinstance(counter, EngineTokenizer):
        skip("needs a local tokenizer (--tokenizer) to compare the engine's rendering with")
    if ctx.behaviour.tokenize_api != "vllm":
        skip(f"engine {ctx.target.engine} has no chat tokenize endpoint")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": ctx.task.question}]
    engine_ids = EngineTokenizer(ctx.api, ctx.target.model).chat_ids(messages)
    expect_eq(
        engine_ids,
        counter.chat_ids(messages),
        f"engine-rendered chat prompt ids (rendered by {counter.source})",
    )


@check(
    "O03.content_parts_equivalence",
    "A user turn as a string or as one text part costs the same prompt "
    "tokens and gives the same greedy answer",
    severity="MUST",
    greedy_retries=2,
    faults=("content_parts_miscounted",),
    source=f"{REFERENCE} O03; vLLM test_complex_message_content",
)
def content_parts_equivalence(ctx: ApiContext) -> None:
    question = ctx.task.question
    parts = [{"role": "user", "content": [{"type": "text", "text": question}]}]
    results = {}
    for what, body in (
        ("string", r1_body(ctx)),
        ("text part", ok_json(ctx.api.post(CHAT, ctx.chat_body(messages=parts)), "text-part chat")),
    ):
        message = message_of(body, what)
        results[what] = (
            usage_of(body, what)["prompt_tokens"],
            tuple(message.get(k) for k in ("content", *REASONING_KEYS)),
        )
    expect_eq(
        results["text part"][0], results["string"][0], "prompt_tokens with text-part content (as a string)"
    )
    expect_eq(
        results["text part"][1], results["string"][1], "greedy answer with text-part content (as a string)"
    )


@check(
    "O04.system_message_counted",
    "Adding a system message adds exactly its template tokens to prompt_tokens",
    severity="SHOULD",
    faults=("system_dropped",),
    source=f"{REFERENCE} O04",
)
def system_message_counted(ctx: ApiContext) -> None:
    counter = ctx.tokens()
    user = [{"role": "user", "content": ctx.task.question}]
    with_system = [{"role": "system", "content": "You answer briefly."}, *user]
    expected = counter.chat_tokens(with_system) - counter.chat_tokens(user)
    got = _prompt_tokens(ctx, with_system, "chat with a system message") - _prompt_tokens(ctx, user, "chat")
    expect_eq(got, expected, f"prompt_tokens added by the system message ({counter.source})")


@check(
    "O05.multi_turn_basic",
    "A three-turn conversation is served with the whole history in the prompt",
    severity="MUST",
    faults=("multi_turn_drops_history",),
    source=f"{REFERENCE} O05; vLLM test_single_chat_session",
)
def multi_turn_basic(ctx: ApiContext) -> None:
    first, second = ctx.tasks[0], ctx.tasks[1 % len(ctx.tasks)]
    messages = [
        {"role": "user", "content": first.question},
        {"role": "assistant", "content": first.answer},
        {"role": "user", "content": second.question},
    ]
    body = ok_json(ctx.api.post(CHAT, ctx.chat_body(messages=messages, max_tokens=8)), "three-turn chat")
    message = message_of(body, "three-turn chat")
    produced = "".join(str(message.get(k) or "") for k in ("content", *REASONING_KEYS))
    expect(produced != "", "three-turn chat answer", desc("non-empty content or reasoning"), message)
    got = usage_of(body, "three-turn chat")["prompt_tokens"]
    if ctx.counter is not None:
        expect_eq(got, ctx.counter.chat_tokens(messages), f"three-turn prompt_tokens ({ctx.counter.source})")
    else:
        last_only = _prompt_tokens(ctx, messages[-1:], "one-turn chat")
        expect(got > last_only, "three-turn prompt_tokens", f"> the last turn alone ({last_only})", got)
