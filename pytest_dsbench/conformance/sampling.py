"""I. n > 1 and batched prompts; J. logprobs."""

from __future__ import annotations

from typing import Any

from pytest_dsbench.conformance.catalog import REFERENCE, check
from pytest_dsbench.conformance.common import (
    choice0,
    is_finite_number,
    ok_json,
    ok_stream,
    text_of,
    usage_of,
)
from pytest_dsbench.conformance.context import REASONING_KEYS, ApiContext
from pytest_dsbench.conformance.expect import desc, expect, expect_eq, fail, skip
from pytest_dsbench.sse import loads_strict


def _produced(message: dict[str, Any]) -> str:
    return "".join(str(message.get(k) or "") for k in ("content", *REASONING_KEYS))


@check(
    "I01.n_choices_non_stream",
    "n=3 returns 3 choices indexed 0, 1, 2, each with output and a finish_reason",
    severity="MUST",
    requires=("n",),
    faults=("n_ignored", "choice_index_wrong"),
    source=f"{REFERENCE} I01; [vllm #14280](https://github.com/vllm-project/vllm/issues/14280)",
)
def n_choices_non_stream(ctx: ApiContext) -> None:
    body = ok_json(ctx.chat(max_tokens=8, n=3, temperature=0.7), "chat n=3")
    choices = body.get("choices") or []
    expect_eq([c.get("index") for c in choices], [0, 1, 2], "chat n=3 choice indices")
    for choice in choices:
        expect(
            _produced(choice.get("message") or {}) != "",
            f"chat n=3 choice {choice.get('index')} output",
            desc("non-empty content or reasoning"),
            choice.get("message"),
        )
        expect(
            choice.get("finish_reason") is not None,
            f"chat n=3 choice {choice.get('index')} finish_reason",
            desc("non-null"),
            None,
        )


@check(
    "I02.n_choices_stream",
    "Streamed n=3: each index 0..2 gets a role chunk, deltas and exactly one finish_reason",
    severity="MUST",
    requires=("n",),
    faults=("n_ignored", "stream_n_index_wrong"),
    source=f"{REFERENCE} I02; vLLM test_chat_completion_n_parameter_streaming",
)
def n_choices_stream(ctx: ApiContext) -> None:
    choices = ok_stream(ctx.chat_stream(max_tokens=8, n=3, temperature=0.7), "streamed chat n=3").choices()
    expect_eq(sorted(choices), [0, 1, 2], "streamed chat n=3 choice indices")
    for index, choice in sorted(choices.items()):
        expect_eq(choice.first_role, "assistant", f"streamed n=3 choice {index}: role of its first chunk")
        expect(
            bool(choice.sequence), f"streamed n=3 choice {index} deltas", desc("at least one text delta"), 0
        )
        expect(
            len(choice.finish_reasons) == 1,
            f"streamed n=3 choice {index}: finish_reason chunks",
            1,
            choice.finish_reasons,
        )


@check(
    "I05.completions_prompt_list",
    "A list of P prompts with n choices returns P*n choices in prompt-major order (checked with echo), "
    "streamed too",
    severity="MUST",
    requires=("n",),
    faults=("prompt_list_only_first", "prompt_list_reversed"),
    source=f"{REFERENCE} I05; vLLM test_batch_completions",
)
def completions_prompt_list(ctx: ApiContext) -> None:
    first, second = ctx.tasks[0].completion_prompt, ctx.tasks[1 % len(ctx.tasks)].completion_prompt
    if first == second:
        second = first + " Again:"
    prompts = [first, second]
    for n, params in ((1, {}), (2, {"temperature": 0.7, "seed": 7})):  # vLLM rejects n > 1 when greedy
        what = f"completion of 2 prompts, n={n}, echo=true"
        body = ok_json(ctx.completion(prompts, max_tokens=4, n=n, echo=True, **params), what)
        choices = body.get("choices") or []
        expect_eq([c.get("index") for c in choices], list(range(2 * n)), f"{what}: choice indices (P*n)")
        for choice in choices:
            own = prompts[choice["index"] // n]
            text = str(choice.get("text") or "")
            expect(
                text.startswith(own),
                f"{what}: choice {choice['index']} (prompt-major order)",
                desc(f"text starting with prompt {choice['index'] // n}: {own[:40]!r}"),
                text[:80],
            )
    stream = ok_stream(ctx.completion_stream(prompts, max_tokens=4), "streamed completion of 2 prompts")
    expect_eq(sorted(stream.choices()), [0, 1], "streamed completion of 2 prompts: choice indices")


@check(
    "I06.completions_token_prompt",
    "A token-id prompt is served and counted as its length",
    severity="SHOULD",
    faults=("token_prompt_rejected",),
    source=f"{REFERENCE} I06",
)
def completions_token_prompt(ctx: ApiContext) -> None:
    ids = ctx.tokens().text_ids(ctx.task.completion_prompt, add_bos=True)
    body = ok_json(ctx.completion(ids, max_tokens=6), "completion with a token-id prompt")
    expect(text_of(body) != "", "token-id prompt completion text", desc("non-empty"), text_of(body))
    expect_eq(
        usage_of(body, "token-id prompt")["prompt_tokens"], len(ids), "token-id prompt usage.prompt_tokens"
    )


def _entries(body: dict[str, Any], what: str) -> list[dict[str, Any]]:
    logprobs = choice0(body, what).get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list) or not content:
        fail(f"{what}: choices[0].logprobs.content", desc("a non-empty list"), logprobs)
    return content


@check(
    "J01.chat_logprobs_shape",
    "Chat logprobs: entries with token, logprob <= 0, bytes, and exactly "
    "top_logprobs=5 candidates sorted descending, the greedy token first",
    severity="MUST",
    requires=("logprobs",),
    faults=("top_logprobs_wrong_count", "logprob_positive"),
    source=f"{REFERENCE} J01; vLLM test_some_logprobs_chat",
)
def chat_logprobs_shape(ctx: ApiContext) -> None:
    body = ok_json(ctx.chat(max_tokens=8, logprobs=True, top_logprobs=5), "chat logprobs top_logprobs=5")
    for i, entry in enumerate(_entries(body, "chat logprobs")):
        where = f"logprobs.content[{i}]"
        expect(isinstance(entry.get("token"), str), f"{where}.token", desc("a string"), entry.get("token"))
        value = entry.get("logprob")
        expect(
            value is not None and is_finite_number(value) and value <= 0,
            f"{where}.logprob",
            desc("a finite number <= 0"),
            value,
        )
        expect(
            entry.get("bytes") is None or isinstance(entry.get("bytes"), list),
            f"{where}.bytes",
            desc("a list of ints or null"),
            entry.get("bytes"),
        )
        top = entry.get("top_logprobs")
        expect(isinstance(top, list) and len(top) == 5, f"{where}.top_logprobs", desc("5 candidates"), top)
        assert isinstance(top, list)
        values = [c.get("logprob") for c in top]
        expect(
            values == sorted(values, reverse=True), f"{where}.top_logprobs order", desc("descending"), values
        )
        expect(
            entry["token"] == top[0].get("token") or value == top[0].get("logprob"),
            f"{where}: greedy token vs top candidate",
            top[0].get("token"),
            entry["token"],
        )


@check(
    "J02.chat_logprobs_off",
    "Without logprobs (false or omitted) choices[0].logprobs is null",
    severity="MUST",
    faults=("logprobs_always",),
    source=f"{REFERENCE} J02; vLLM test_no_logprobs_chat",
)
def chat_logprobs_off(ctx: ApiContext) -> None:
    cases: tuple[tuple[str, dict[str, Any]], ...] = (
        ("logprobs omitted", {}),
        ("logprobs=false", {"logprobs": False}),
    )
    for what, params in cases:
        body = ok_json(ctx.chat(max_tokens=4, **params), f"chat {what}")
        expect(
            choice0(body, what).get("logprobs") is None,
            f"chat {what}: choices[0].logprobs",
            None,
            choice0(body, what).get("logprobs"),
        )


@check(
    "J03.top_logprobs_zero",
    "top_logprobs=0 gives entries with an empty top_logprobs list",
    severity="SHOULD",
    requires=("logprobs",),
    faults=("top_logprobs_wrong_count",),
    source=f"{REFERENCE} J03",
)
def top_logprobs_zero(ctx: ApiContext) -> None:
    body = ok_json(ctx.chat(max_tokens=4, logprobs=True, top_logprobs=0), "chat top_logprobs=0")
    for i, entry in enumerate(_entries(body, "chat top_logprobs=0")):
        expect_eq(entry.get("top_logprobs"), [], f"logprobs.content[{i}].top_logprobs with top_logprobs=0")


@check(
    "J04.logprobs_count_matches_tokens",
    "There is one logprob entry per generated token, reasoning included",
    severity="SHOULD",
    requires=("logprobs",),
    faults=("logprobs_skip_reasoning",),
    source=f"{REFERENCE} J04; vLLM test_streaming_logprobs_kept_when_parser_suppresses_delta",
)
def logprobs_count_matches_tokens(ctx: ApiContext) -> None:
    body = ok_json(ctx.chat(logprobs=True), "chat logprobs=true")
    expect_eq(
        len(_entries(body, "chat logprobs")),
        usage_of(body, "chat")["completion_tokens"],
        "number of logprob entries (usage.completion_tokens)",
    )


@check(
    "J05.logprobs_finite",
    "With 20 candidates per token every logprob is finite (valid JSON, never "
    "-Infinity/NaN) and the server answers 200",
    severity="MUST",
    requires=("logprobs",),
    faults=("logprobs_non_finite",),
    source=f"{REFERENCE} J05; [sglang #5984](https://github.com/sgl-project/sglang/issues/5984)",
)
def logprobs_finite(ctx: ApiContext) -> None:
    for what, reply in (
        ("chat top_logprobs=20", ctx.chat(max_tokens=8, logprobs=True, top_logprobs=20)),
        ("completion logprobs=20", ctx.completion(max_tokens=8, logprobs=20)),
    ):
        if reply.status != 200:
            fail(what, desc("HTTP 200"), desc(reply.describe()))
        try:
            loads_strict(reply.body.decode("utf-8"))
        except ValueError as exc:
            fail(f"{what} body", desc("strict JSON with finite numbers"), str(exc))


@check(
    "J06.completions_logprobs_shape",
    "Completions logprobs: tokens, token_logprobs, top_logprobs and "
    "text_offset all have one entry per generated token; 5-6 candidates each; offsets non-decreasing",
    severity="SHOULD",
    requires=("logprobs",),
    faults=("completion_logprobs_misaligned",),
    source=f"{REFERENCE} J06; vLLM test_completion_logprobs",
    deviations={"sglang": "text_offset is -1 (not supported)"},
)
def completions_logprobs_shape(ctx: ApiContext) -> None:
    body = ok_json(ctx.completion(max_tokens=8, logprobs=5), "completion logprobs=5")
    logprobs = choice0(body, "completion").get("logprobs")
    expect(isinstance(logprobs, dict), "completion choices[0].logprobs", desc("an object"), logprobs)
    assert isinstance(logprobs, dict)
    count = usage_of(body, "completion")["completion_tokens"]
    for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
        values = logprobs.get(key)
        expect(
            isinstance(values, list) and len(values) == count,
            f"completion logprobs.{key} length",
            count,
            len(values) if isinstance(values, list) else values,
        )
    for i, top in enumerate(logprobs["top_logprobs"]):
        expect(
            isinstance(top, dict) and 1 <= len(top) <= 6,
            f"completion logprobs.top_logprobs[{i}]",
            desc("1 to 6 candidates (5, plus the sampled token; fewer when ids decode to the same text)"),
            top,
        )
    offsets = logprobs["text_offset"]
    if ctx.behaviour.text_offsets:
        expect(offsets == sorted(offsets), "completion logprobs.text_offset", desc("non-decreasing"), offsets)


OPEN_QUESTION = "Tell me a story."
"""A question with many good answers: sampling at temperature 1 spreads over them (the fixture model too)."""


def _choice_texts(body: dict[str, Any]) -> list[str]:
    return [_produced(c.get("message") or {}) for c in body.get("choices") or []]


@check(
    "I03.n_diversity",
    "n=3 sampled at temperature 1 does not return three identical choices",
    severity="SHOULD",
    requires=("n",),
    greedy_retries=2,
    faults=("n_choices_identical",),
    source=f"{REFERENCE} I03; vLLM test_parallel_no_streaming; "
    "[vLLM PR #16863](https://github.com/vllm-project/vllm/pull/16863)",
)
def n_diversity(ctx: ApiContext) -> None:
    what = f"chat {OPEN_QUESTION!r} n=3, temperature 1, max_tokens=16"
    body = ok_json(ctx.chat(OPEN_QUESTION, max_tokens=16, n=3, temperature=1.0, top_p=1.0), what)
    texts = _choice_texts(body)
    expect_eq(len(texts), 3, f"{what}: number of choices")
    expect(len(set(texts)) > 1, f"{what}: the choices", desc("not all three identical"), texts)


@check(
    "I04.n_with_seed",
    "n=2 with a seed is accepted, and the same seeded request returns the same choices again",
    severity="SHOULD",
    requires=("n", "seed"),
    greedy_retries=2,
    faults=("seed_ignored", "n_ignored"),
    source=f"{REFERENCE} I04; vLLM test_chat_completion_n_with_seed",
)
def n_with_seed(ctx: ApiContext) -> None:
    what = f"chat {OPEN_QUESTION!r} n=2, seed=42, temperature 0.8"
    params: dict[str, Any] = {"max_tokens": 16, "n": 2, "seed": 42, "temperature": 0.8, "top_p": 1.0}
    first = _choice_texts(ok_json(ctx.chat(OPEN_QUESTION, **params), what))
    again = _choice_texts(ok_json(ctx.chat(OPEN_QUESTION, **params), f"{what} (repeat)"))
    expect_eq(len(first), 2, f"{what}: number of choices")
    expect_eq(again, first, f"{what}: choices on repeat (the first call's choices)")


@check(
    "J07.echo_completions",
    "Completions echo=true with logprobs=1 (text and token-id prompts): the text starts with the prompt, the "
    "first token's logprob and top_logprobs are null, and there is an entry per prompt and completion token",
    severity="SHOULD",
    requires=("logprobs",),
    faults=("echo_logprobs_prompt_missing",),
    source=f"{REFERENCE} J07; vLLM test_echo_logprob_completion",
)
def echo_completions(ctx: ApiContext) -> None:
    if not ctx.behaviour.echo_honoured:
        skip("the engine accepts echo=true and ignores it (I05 records it as a known failure)")
    prompt = ctx.task.completion_prompt
    ids = ctx.tokens().text_ids(prompt, add_bos=False)
    for kind, sent in (("text", prompt), ("token-id", ids)):
        what = f"completion echo=true logprobs=1 with a {kind} prompt"
        body = ok_json(ctx.completion(sent, max_tokens=5, echo=True, logprobs=1), what)
        text = text_of(body)
        expect(text.startswith(prompt), f"{what}: text", desc(f"starting with the prompt {prompt[:40]!r}"), text)
        logprobs = choice0(body, what).get("logprobs")
        expect(isinstance(logprobs, dict), f"{what}: choices[0].logprobs", desc("an object"), logprobs)
        assert isinstance(logprobs, dict)
        usage = usage_of(body, what)
        count = usage["prompt_tokens"] + usage["completion_tokens"]
        for key in ("tokens", "token_logprobs", "top_logprobs"):
            values = logprobs.get(key)
            expect(
                isinstance(values, list) and len(values) == count,
                f"{what}: logprobs.{key} length",
                f"prompt_tokens + completion_tokens = {count}",
                len(values) if isinstance(values, list) else values,
            )
        for key in ("token_logprobs", "top_logprobs"):
            first = logprobs[key][0]
            expect(first is None, f"{what}: logprobs.{key}[0] (nothing precedes the first token)", None, first)


@check(
    "J08.stream_logprobs_consistency",
    "At temperature 0 the streamed logprobs.content entries equal the non-streamed ones (tokens; logprobs "
    "within 1e-3)",
    severity="SHOULD",
    requires=("logprobs",),
    greedy_retries=2,
    faults=("stream_logprobs_differ",),
    source=f"{REFERENCE} J08",
)
def stream_logprobs_consistency(ctx: ApiContext) -> None:
    body = ok_json(ctx.chat(max_tokens=8, logprobs=True), "chat logprobs=true max_tokens=8")
    plain = _entries(body, "chat logprobs")
    choice = ok_stream(ctx.chat_stream(max_tokens=8, logprobs=True), "streamed chat logprobs=true").choices().get(0)
    streamed = choice.logprobs if choice else []
    expect_eq(
        [e.get("token") for e in streamed],
        [e.get("token") for e in plain],
        "streamed logprobs.content tokens (the non-streamed ones)",
    )
    far = [
        (i, s.get("logprob"), p.get("logprob"))
        for i, (s, p) in enumerate(zip(streamed, plain, strict=True))
        if not (is_finite_number(s.get("logprob")) and is_finite_number(p.get("logprob")))
        or abs(s["logprob"] - p["logprob"]) > 1e-3
    ]
    expect(
        not far,
        "streamed logprobs vs non-streamed (position, streamed, non-streamed)",
        desc("equal within 1e-3"),
        far[:3],
    )
