"""Helpers shared by the check modules: judging replies, reading choices, reference runs groups reuse."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pytest_dsbench.conformance.client import Reply, StreamReply
from pytest_dsbench.conformance.context import REASONING_KEYS, ApiContext
from pytest_dsbench.conformance.expect import desc, expect, fail, skip

T = TypeVar("T")

OPENAI_FINISH_REASONS = ("stop", "length", "tool_calls", "content_filter", "function_call")
THINK_FRAGMENTS = ("<think>", "</think>")


def ok_json(reply: Reply, what: str) -> dict[str, Any]:
    """Demand HTTP 200 with a JSON object body; return it."""
    if reply.status != 200 or not isinstance(reply.json, dict):
        fail(what, desc("HTTP 200 with a JSON object"), desc(reply.describe()))
    return reply.obj()


def ok_stream(stream: StreamReply, what: str) -> StreamReply:
    """Demand HTTP 200 and an event stream without framing problems."""
    if stream.status != 200:
        fail(what, desc("HTTP 200 and an event stream"), desc(stream.as_reply().describe()))
    if stream.stream.problems:
        fail(f"{what}: SSE framing", desc("no framing problems"), "; ".join(stream.stream.problems[:3]))
    return stream


def rejected(reply: Reply, what: str, statuses: tuple[int, ...] = (400,)) -> None:
    """Demand a client error (one of ``statuses``) with a JSON body that carries a message."""
    if reply.status not in statuses:
        wanted = " or ".join(f"HTTP {s}" for s in statuses)
        fail(what, desc(f"{wanted} with an error message"), desc(reply.describe()))
    if reply.error_message() is None:
        fail(
            f"{what}: error body",
            desc("a JSON error with a message (error.message or message)"),
            desc(reply.describe()),
        )


def client_error(reply: Reply, what: str) -> None:
    """Demand some 4xx (never a 5xx, never success)."""
    if not 400 <= reply.status < 500:
        fail(what, desc("a 4xx client error"), desc(reply.describe()))


def choice0(body: dict[str, Any], what: str) -> dict[str, Any]:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        fail(f"{what}: choices", desc("a non-empty list of choice objects"), choices)
    return dict(choices[0])


def message_of(body: dict[str, Any], what: str) -> dict[str, Any]:
    message = choice0(body, what).get("message")
    if not isinstance(message, dict):
        fail(f"{what}: choices[0].message", desc("an object"), message)
    return dict(message)


def usage_of(body: dict[str, Any], what: str) -> dict[str, Any]:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        fail(f"{what}: usage", desc("a usage object"), usage)
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = usage.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            fail(f"{what}: usage.{key}", desc("a non-negative integer"), value)
    return dict(usage)


def consistent_usage(usage: dict[str, Any], what: str) -> None:
    total = usage["prompt_tokens"] + usage["completion_tokens"]
    expect(
        usage["total_tokens"] == total,
        f"{what}: usage.total_tokens",
        f"prompt + completion = {total}",
        usage["total_tokens"],
    )


def text_of(body: dict[str, Any]) -> str:
    """Completions: the first choice's text."""
    choices = body.get("choices") or [{}]
    return str(choices[0].get("text") or "")


def other_reasoning_key(key: str) -> str:
    return REASONING_KEYS[1] if key == REASONING_KEYS[0] else REASONING_KEYS[0]


def is_finite_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# -- reference runs shared by several checks (computed once per session) -------------------------------------
def r1_reply(ctx: ApiContext) -> Reply:
    """The task question, non-streamed, greedy, with a budget that lets R1 finish."""
    return ctx.memo("r1_reply", lambda: ctx.chat())


def r1_body(ctx: ApiContext) -> dict[str, Any]:
    return ok_json(r1_reply(ctx), "chat completion of the probe question")


def r1_stream(ctx: ApiContext) -> StreamReply:
    """The same request streamed, with ``include_usage``."""
    return ctx.memo("r1_stream", lambda: ctx.chat_stream(stream_options={"include_usage": True}))


def completion_reference(ctx: ApiContext) -> dict[str, Any]:
    """The probe completion prompt, greedy, long enough to end naturally (stop strings are chosen from it)."""
    reply = ctx.memo("completion_reference", lambda: ctx.completion(max_tokens=ctx.answer_max_tokens))
    return ok_json(reply, "completion of the probe prompt")


def completion_stream(ctx: ApiContext) -> StreamReply:
    return ctx.memo(
        "completion_stream",
        lambda: ctx.completion_stream(
            max_tokens=ctx.answer_max_tokens, stream_options={"include_usage": True}
        ),
    )


def truncated_reply(ctx: ApiContext) -> Reply:
    """R1 cut by max_tokens inside its reasoning."""
    return ctx.memo("truncated_reply", lambda: ctx.chat(max_tokens=8))


def truncated_stream(ctx: ApiContext) -> StreamReply:
    return ctx.memo(
        "truncated_stream", lambda: ctx.chat_stream(max_tokens=8, stream_options={"include_usage": True})
    )


def assert_alive(ctx: ApiContext, what: str) -> None:
    """A valid small request still succeeds (the server survived whatever came before)."""
    reply = ctx.chat(max_tokens=4)
    if reply.status != 200:
        fail(f"{what}: a valid request afterwards", desc("HTTP 200"), desc(reply.describe()))


def overlong_content(tokens: int) -> str:
    """User text of at least ``tokens`` tokens in any tokenizer (each repetition is one token or more)."""
    return "is" + " is" * tokens


# -- server metrics and idleness --------------------------------------------------------------------------
def metric_value(text: str, name: str) -> float | None:
    """Sum of all samples of ``name`` (any labels) in Prometheus text, or None when absent."""
    pattern = re.compile(rf"^{re.escape(name)}(?:\{{[^}}]*\}})?\s+([-+0-9.eE]+|NaN)\s*$", re.MULTILINE)
    values = [float(v) for v in pattern.findall(text)]
    return sum(values) if values else None


def metric_counters(ctx: ApiContext) -> dict[str, float | None]:
    reply = ctx.api.get("/metrics")
    text = reply.body.decode("utf-8", "replace") if reply.status == 200 else ""
    prefix = ctx.behaviour.metrics_prefix or ""
    return {
        name: metric_value(text, prefix + name)
        for name in ("prompt_tokens_total", "generation_tokens_total", "request_success_total")
    }


def on_idle_server(ctx: ApiContext, requests: int, run: Callable[[], T], *, attempts: int = 3) -> T:
    """Run ``run`` (which sends ``requests`` requests) until no other client's request finished meanwhile.

    Determinism checks are only meaningful on an idle server (batch composition changes greedy outputs); the
    engine's request counter tells whether anyone else was served. Skips the check when the server never was
    idle; without metrics it runs once and trusts the caller's environment.
    """
    if "metrics" not in ctx.behaviour.features:
        return run()
    for _ in range(attempts):
        before = metric_counters(ctx)["request_success_total"]
        result = run()
        deadline = time.monotonic() + 2.0
        after = metric_counters(ctx)["request_success_total"]
        while None not in (before, after) and after - before < requests and time.monotonic() < deadline:  # type: ignore[operator]
            time.sleep(0.1)
            after = metric_counters(ctx)["request_success_total"]
        if before is None or after is None:
            return result
        if after - before == requests:
            return result
    skip(f"the server was not idle in {attempts} attempts (other clients' requests finished meanwhile)")
