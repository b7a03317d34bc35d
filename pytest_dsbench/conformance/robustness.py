"""P. Robustness and concurrency: mixed concurrent traffic without crash, hang or cross-talk; abandoned
requests freeing the engine; requests without max_tokens running together; prompts near the context limit.

Concurrency is the hw profile's ``max_concurrency`` (seed 004: 4 on VA16), at most 32.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import httpx

from pytest_dsbench.conformance.capacity import (
    StartGate,
    Timed,
    client_timeout,
    long_generation,
    parallel,
    running_gauge,
    timed_stream,
    wait_for_release,
)
from pytest_dsbench.conformance.catalog import REFERENCE, check
from pytest_dsbench.conformance.client import Reply, StreamReply
from pytest_dsbench.conformance.common import choice0, message_of, ok_json, r1_body, usage_of
from pytest_dsbench.conformance.context import DROP, ApiContext, Task
from pytest_dsbench.conformance.expect import desc, expect, expect_eq, fail, skip


def _distinct_tasks(ctx: ApiContext) -> list[Task]:
    """Tasks whose answers are not substrings of each other: each response proves which request it answers."""
    chosen: list[Task] = []
    for task in ctx.tasks:
        if all(task.answer not in t.answer and t.answer not in task.answer for t in chosen):
            chosen.append(task)
    return chosen


@check(
    "P01.concurrent_mixed_load",
    "Concurrent chat/completions, streamed and not, n=1/2: all 200, every "
    "stream well framed, every answer is its own question's (no cross-talk), server alive afterwards",
    severity="MUST",
    faults=("cross_talk",),
    source=f"{REFERENCE} P01; "
    "[sglang #4161](https://github.com/sgl-project/sglang/issues/4161); "
    "[vLLM PR #16863](https://github.com/vllm-project/vllm/pull/16863)",
)
def concurrent_mixed_load(ctx: ApiContext) -> None:
    tasks = _distinct_tasks(ctx)
    if len(tasks) < 2:
        skip("fewer than 2 probe questions with distinct answers")
    # Answers prove which question a chat response belongs to, if the model answers its probe question
    # correctly when asked alone; completions prove it with echo (the text starts with its own prompt) or,
    # where the engine ignores echo, by equalling the greedy text the same prompt gets alone.
    reliable = ctx.task.answer in str(message_of(r1_body(ctx), "chat").get("content") or "")
    total = max(4, ctx.concurrency)
    echo = {"echo": True} if ctx.behaviour.echo_honoured else {}
    plan: list[tuple[str, Task, str, Callable[[], Any]]] = []
    for i in range(total):
        task = tasks[i % len(tasks)]
        prompt = f"{task.completion_prompt}{'' if i < len(tasks) else ' ' * (i // len(tasks))}"
        kind = ("chat", "chat_stream", "completion", "completion_stream", "chat_n2")[i % 5]
        call: Callable[[], Any]
        if kind == "chat":
            call = partial(ctx.chat, task.question)
        elif kind == "chat_stream":
            call = partial(ctx.chat_stream, task.question)
        elif kind == "completion":
            call = partial(ctx.completion, prompt, max_tokens=8, **echo)
        elif kind == "completion_stream":
            call = partial(ctx.completion_stream, prompt, max_tokens=8, **echo)
        else:
            n = 2 if "n" in ctx.behaviour.features else 1  # n > 1 needs sampling: vLLM rejects it when greedy
            call = partial(ctx.chat, task.question, n=n, temperature=0.3, seed=11)
        plan.append((kind, task, prompt, call))
    results = parallel([call for *_, call in plan], workers=total)
    wrong: list[str] = []
    for number, ((kind, task, prompt, _), result) in enumerate(zip(plan, results, strict=True)):
        what = f"request {number} ({kind}, {task.question!r})"
        if isinstance(result, StreamReply):
            if result.status != 200 or result.stream.problems:
                fail(
                    what,
                    desc("HTTP 200 and a well-framed stream"),
                    desc(f"HTTP {result.status}; {'; '.join(result.stream.problems[:2])}"),
                )
            choices = result.choices().values()
            answer = "".join(c.field_text("content") for c in choices) + "".join(c.text for c in choices)
        else:
            assert isinstance(result, Reply)
            if result.status != 200:
                fail(what, desc("HTTP 200"), desc(result.describe()))
            answer = " | ".join(
                str((c.get("message") or {}).get("content") or c.get("text") or "")
                for c in result.obj().get("choices", [])
            )
        if kind.startswith("completion") and ctx.behaviour.echo_honoured and not answer.startswith(prompt):
            wrong.append(f"{what} echoed {answer[:60]!r}")
        if kind.startswith("completion") and not ctx.behaviour.echo_honoured:
            alone = _completion_alone(ctx, prompt)
            if answer != alone:
                wrong.append(f"{what} gave {answer[:60]!r}, alone {alone[:60]!r}")
        if kind.startswith("chat") and reliable and task.answer not in answer:
            wrong.append(f"{what} answered {answer[-60:]!r}")
    expect(
        not wrong,
        f"{len(wrong)} of {total} concurrent responses",
        desc("each response to its own request"),
        wrong[:3],
    )
    health = ctx.api.get("/health")
    expect(
        health.status == 200,
        "GET /health after the concurrent load",
        desc("HTTP 200"),
        desc(health.describe()),
    )


@check(
    "P02.concurrent_streams_all_terminate",
    "Concurrent streams all reach data: [DONE] within the request timeout (no hang)",
    severity="MUST",
    faults=("stream_hang_under_concurrency",),
    source=f"{REFERENCE} P02; [lmdeploy #3144](https://github.com/InternLM/lmdeploy/issues/3144)",
)
def concurrent_streams_all_terminate(ctx: ApiContext) -> None:
    total = max(2, ctx.concurrency)
    calls = [
        partial(ctx.chat_stream, ctx.tasks[i % len(ctx.tasks)].question, max_tokens=16) for i in range(total)
    ]
    streams: list[StreamReply] = parallel(calls, workers=total)
    unfinished = [
        f"stream {i}: HTTP {s.status}, done={s.stream.done}, timed_out={s.timed_out}"
        for i, s in enumerate(streams)
        if s.status != 200 or not s.stream.done or s.timed_out
    ]
    expect(not unfinished, f"{total} concurrent streams", desc("all end with data: [DONE]"), unfinished[:3])


@check(
    "P06.survives_error_storm",
    "Concurrent invalid requests mixed with valid ones: every invalid one 4xx, "
    "every valid one 200, health 200 afterwards",
    severity="MUST",
    faults=("poison_after_bad_request",),
    source=f"{REFERENCE} P06",
)
def survives_error_storm(ctx: ApiContext) -> None:
    total = max(4, ctx.concurrency)
    bad_bodies = [
        ctx.chat_body(max_tokens=-1),
        ctx.chat_body(temperature=-2.0, max_tokens=4),
        ctx.chat_body(model="dsbench-no-such-model", max_tokens=4)
        if ctx.behaviour.validates_model
        else ctx.chat_body(top_p=5.0, max_tokens=4),
    ]
    plan: list[tuple[bool, dict[str, Any]]] = []
    for i in range(total):
        valid = i % 2 == 1
        plan.append((valid, ctx.chat_body(max_tokens=4) if valid else bad_bodies[i % len(bad_bodies)]))
    replies: list[Reply] = parallel(
        [partial(ctx.api.post, "/v1/chat/completions", body) for _, body in plan], workers=total
    )
    problems = []
    for (valid, _), reply in zip(plan, replies, strict=True):
        if valid and reply.status != 200:
            problems.append(f"valid request: {reply.describe()[:100]}")
        if not valid and not 400 <= reply.status < 500:
            problems.append(f"invalid request: {reply.describe()[:100]}")
    expect(
        not problems,
        f"{total} mixed valid/invalid concurrent requests",
        desc("valid -> 200, invalid -> 4xx"),
        problems[:3],
    )
    health = ctx.api.get("/health")
    expect(
        health.status == 200, "GET /health after the error storm", desc("HTTP 200"), desc(health.describe())
    )


CANCEL_CLIENT_TIMEOUT_S = 0.5
CANCEL_SMALL_TIMEOUT_S = 5.0
CANCEL_GRACE_S = 3.0


def _abandoned_post(ctx: ApiContext, body: dict[str, Any]) -> str:
    """POST a non-streamed chat and give up after 0.5 s: 'abandoned', or the status when it was faster."""
    try:
        response = ctx.api.http.post(
            "/v1/chat/completions", json=body, timeout=client_timeout(CANCEL_CLIENT_TIMEOUT_S)
        )
    except httpx.TimeoutException:
        return "abandoned"
    return f"HTTP {response.status_code}"


@check(
    "P03.cancellation_frees_capacity",
    f"Long non-streamed requests abandoned by their clients after {CANCEL_CLIENT_TIMEOUT_S:g} s free the engine: "
    f"a small request succeeds within {CANCEL_SMALL_TIMEOUT_S:g} s and the running-request gauge (or the token "
    f"counter) settles within {CANCEL_GRACE_S:g} s",
    severity="SHOULD",
    faults=("disconnect_not_aborted",),
    source=f"{REFERENCE} P03; vLLM test_request_cancellation; LMDeploy serving.py is_disconnected -> async_abort",
)
def cancellation_frees_capacity(ctx: ApiContext) -> None:
    total = max(4, ctx.concurrency)
    before = running_gauge(ctx)
    body = ctx.chat_body(**long_generation(ctx))
    outcomes = parallel([partial(_abandoned_post, ctx, body) for _ in range(total)], workers=total)
    errors = [o for o in outcomes if o not in ("abandoned", "HTTP 200")]
    expect(not errors, f"{total} long requests", desc("HTTP 200 or still running when abandoned"), errors[:3])
    abandoned = outcomes.count("abandoned")  # 0 on a server fast enough to finish them all in time
    what = f"{abandoned} of {total} clients gave up on their requests"
    try:
        small = ctx.api.post("/v1/chat/completions", ctx.chat_body(max_tokens=4), timeout_s=CANCEL_SMALL_TIMEOUT_S)
        outcome = small.describe()
    except httpx.TimeoutException:
        small, outcome = None, f"no answer within {CANCEL_SMALL_TIMEOUT_S:g} s"
    expect(
        small is not None and small.status == 200,
        f"a small request after {what}",
        desc(f"HTTP 200 within {CANCEL_SMALL_TIMEOUT_S:g} s"),
        desc(outcome),
    )
    release = wait_for_release(ctx, before[1] if before else None, CANCEL_GRACE_S, what)
    expect(release.released is not False, f"the engine after {what}", desc("no more work for them"), release.detail)


START_STREAMS = 4
START_TIMEOUT_S = 60.0


@check(
    "P04.omitted_max_tokens_does_not_serialize",
    f"{START_STREAMS} concurrent chats without max_tokens all start streaming together: their first tokens come "
    "within max(1 s, twice the fastest first token) of each other, not one after another's end",
    severity="SHOULD",
    faults=("omitted_max_tokens_serializes",),
    source=f"{REFERENCE} P04; SGLang test_large_max_new_tokens",
)
def omitted_max_tokens_does_not_serialize(ctx: ApiContext) -> None:
    gate = StartGate(START_STREAMS)
    bodies = [
        ctx.chat_body(ctx.tasks[i % len(ctx.tasks)].question, stream=True, max_tokens=DROP)
        for i in range(START_STREAMS)
    ]
    timed: list[Timed] = parallel(
        [partial(timed_stream, ctx, body, gate, START_TIMEOUT_S) for body in bodies], START_STREAMS
    )
    what = f"{START_STREAMS} concurrent streamed chats without max_tokens"
    failed = [f"HTTP {t.status} {t.body[:100]!r}" for t in timed if t.status != 200]
    expect(not failed, what, desc("HTTP 200"), failed)
    firsts = [t.first_token_s for t in timed]
    expect(
        all(f is not None for f in firsts),
        f"{what}: first tokens",
        desc(f"a first token on every stream within {START_TIMEOUT_S:g} s"),
        firsts,
    )
    starts = sorted(f for f in firsts if f is not None)
    limit = max(1.0, 2 * starts[0])
    expect(
        starts[-1] - starts[0] <= limit,
        f"{what}: spread of the first tokens (s after sending: {', '.join(f'{s:.2f}' for s in starts)})",
        f"<= {limit:.2f} s",
        round(starts[-1] - starts[0], 2),
    )


NEEDLE = "The secret number is 7481."
NEEDLE_ANSWER = "7481"
NEEDLE_QUESTION = "What is the secret number? Answer with the number only."
HAYSTACK = " The grass is green and the sky is blue."


def _needle_messages(ctx: ApiContext, target: int) -> tuple[list[dict[str, Any]], int]:
    """A one-message chat of about ``target`` prompt tokens: the needle, haystack sentences, the question."""
    counter = ctx.tokens()

    def build(repeats: int) -> tuple[list[dict[str, Any]], int]:
        messages = [{"role": "user", "content": f"{NEEDLE}{HAYSTACK * repeats}\n\n{NEEDLE_QUESTION}"}]
        return messages, counter.chat_tokens(messages)

    _, small = build(4)
    _, large = build(20)
    per_repeat = max(1e-9, (large - small) / 16)
    repeats = max(0, int(4 + (target - small) / per_repeat))
    messages, count = build(repeats)
    while count > target and repeats > 0:
        repeats -= max(1, int((count - target) / per_repeat))
        messages, count = build(max(0, repeats))
    return messages, count


@check(
    "P05.long_context_near_limit",
    "A chat filling 90-92 % of the context (capped by the deployment's max_input_len) is served: prompt_tokens "
    "exact, an answer generated, and the needle found (real models)",
    severity="SHOULD",
    faults=("long_prompt_empty_output",),
    source=f"{REFERENCE} P05; [sglang #5734](https://github.com/sgl-project/sglang/issues/5734)",
)
def long_context_near_limit(ctx: ApiContext) -> None:
    context = ctx.target.max_model_len
    target = min(int(0.92 * context), context - 32, ctx.target.max_input_len or context)
    messages, prompt_tokens = _needle_messages(ctx, target)
    share = f"{prompt_tokens} prompt tokens, {100 * prompt_tokens / context:.1f} % of {context}"
    params: dict[str, Any] = {"max_tokens": context - prompt_tokens}
    if ctx.task_only_model:  # the fixture model cannot find needles: only show that it serves and generates
        params["max_tokens"] = min(16, context - prompt_tokens)
        if "min_tokens" in ctx.behaviour.features and ctx.behaviour.min_tokens_param:
            params[ctx.behaviour.min_tokens_param] = min(8, params["max_tokens"])
    body = ok_json(
        ctx.api.post("/v1/chat/completions", ctx.chat_body(messages=messages, **params)),
        f"chat of {share}",
    )
    usage = usage_of(body, f"chat of {share}")
    expect_eq(usage["prompt_tokens"], prompt_tokens, f"chat of {share}: usage.prompt_tokens ({ctx.tokens().source})")
    least = int(params.get(ctx.behaviour.min_tokens_param or "", 1))
    expect(
        usage["completion_tokens"] >= least,
        f"chat of {share}: usage.completion_tokens",
        f">= {least}",
        usage["completion_tokens"],
    )
    if ctx.task_only_model:
        return
    message = message_of(body, f"chat of {share}")
    content = str(message.get("content") or "")
    expect(
        NEEDLE_ANSWER in content,
        f"chat of {share}: message.content (finish_reason {choice0(body, 'chat').get('finish_reason')!r})",
        desc(f"the needle {NEEDLE_ANSWER!r}"),
        content,
    )


def _completion_alone(ctx: ApiContext, prompt: str) -> str:
    """The greedy 8-token text ``prompt`` gets when it is the only request (asked once per prompt)."""
    reply = ctx.memo(f"p01_alone:{prompt}", lambda: ctx.completion(prompt, max_tokens=8))
    return str(choice0(ok_json(reply, "completion asked alone"), "completion asked alone").get("text") or "")
