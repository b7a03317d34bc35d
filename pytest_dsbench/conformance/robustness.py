"""P. Robustness and concurrency: mixed concurrent traffic without crash, hang or cross-talk.

Concurrency is the hw profile's ``max_concurrency`` (seed 004: 4 on VA16), at most 32.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from pytest_dsbench.conformance.catalog import REFERENCE, check
from pytest_dsbench.conformance.client import Reply, StreamReply
from pytest_dsbench.conformance.common import message_of, r1_body
from pytest_dsbench.conformance.context import ApiContext, Task
from pytest_dsbench.conformance.expect import desc, expect, fail, skip


def _distinct_tasks(ctx: ApiContext) -> list[Task]:
    """Tasks whose answers are not substrings of each other: each response proves which request it answers."""
    chosen: list[Task] = []
    for task in ctx.tasks:
        if all(task.answer not in t.answer and t.answer not in task.answer for t in chosen):
            chosen.append(task)
    return chosen


def _parallel(calls: Sequence[Callable[[], Any]], workers: int) -> list[Any]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.result() for f in futures]


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
    # correctly when asked alone; completions prove it with echo (the text starts with its own prompt).
    reliable = ctx.task.answer in str(message_of(r1_body(ctx), "chat").get("content") or "")
    total = max(4, ctx.concurrency)
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
            call = partial(ctx.completion, prompt, max_tokens=8, echo=True)
        elif kind == "completion_stream":
            call = partial(ctx.completion_stream, prompt, max_tokens=8, echo=True)
        else:
            n = 2 if "n" in ctx.profile.features else 1  # n > 1 needs sampling: vLLM rejects it when greedy
            call = partial(ctx.chat, task.question, n=n, temperature=0.3, seed=11)
        plan.append((kind, task, prompt, call))
    results = _parallel([call for *_, call in plan], workers=total)
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
        if kind.startswith("completion") and not answer.startswith(prompt):
            wrong.append(f"{what} echoed {answer[:60]!r}")
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
    streams: list[StreamReply] = _parallel(calls, workers=total)
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
        if ctx.profile.validates_model
        else ctx.chat_body(top_p=5.0, max_tokens=4),
    ]
    plan: list[tuple[bool, dict[str, Any]]] = []
    for i in range(total):
        valid = i % 2 == 1
        plan.append((valid, ctx.chat_body(max_tokens=4) if valid else bad_bodies[i % len(bad_bodies)]))
    replies: list[Reply] = _parallel(
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
