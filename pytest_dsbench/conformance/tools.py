"""M. Tool calling, where the engine runs a DeepSeek tool parser (the ``tools`` feature).

DeepSeek-V3/R1 writes tool calls as ``<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json
\\n{...}\\n```<｜tool▁call▁end｜>...<｜tool▁calls▁end｜>`` after its reasoning; the engine's parser must turn that
into ``tool_calls`` (streamed as indexed deltas), keep the markers out of ``content`` and the reasoning field, and
honour ``tool_choice``. The fixture model is trained on exactly these requests (``tool_requests``), so on the
embedded engine every check exercises the parser on real model output.
"""

from __future__ import annotations

import json
from typing import Any

from pytest_dsbench.conformance.catalog import REFERENCE, check
from pytest_dsbench.conformance.client import ChoiceStream
from pytest_dsbench.conformance.common import choice0, message_of, ok_json, ok_stream
from pytest_dsbench.conformance.context import ApiContext
from pytest_dsbench.conformance.expect import desc, expect, expect_eq, fail, skip
from pytest_dsbench.conformance.structured import parse_json, schema_errors
from pytest_dsbench.conformance.tool_requests import (
    TIME_TOOL,
    TOOL_QUESTION,
    TOOL_RESULT,
    TWO_CITY_QUESTION,
    WEATHER_TOOL,
    strict,
    tool_result_messages,
)

RAW_TOOL_MARKERS = ("<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>")
TOOL_MAX_TOKENS = 256
"""At least this many tokens for a tool answer: the reasoning and two calls of the fixture model take about 70."""
NAMED_WEATHER = {"type": "function", "function": {"name": "get_weather"}}
_FORCED: tuple[tuple[str, list[dict[str, Any]], Any], ...] = (
    ("tool chat with a named tool_choice get_weather", [strict(TIME_TOOL), strict(WEATHER_TOOL)], NAMED_WEATHER),
    ("tool chat with tool_choice 'required'", [strict(WEATHER_TOOL)], "required"),
)
"""Forced calls, of strict tools: only a strict tool's arguments are bound to its schema (see ``strict``)."""


def _tool_body(
    ctx: ApiContext, content: str | None = TOOL_QUESTION, *, judges_the_answer: bool = True, **params: Any
) -> dict[str, Any]:
    """A chat body with tools; ``judges_the_answer``: the check reads what the model answers (skips where the
    fixture model cannot answer, see ``EngineBehaviour.tool_prompt_reserialised``)."""
    params.setdefault("tools", [WEATHER_TOOL])
    params.setdefault("tool_choice", "auto")
    reserialised = ctx.behaviour.tool_prompt_reserialised and params["tool_choice"] != "none"
    if judges_the_answer and ctx.task_only_model and reserialised:
        skip(
            f"engine {ctx.target.engine} renders the tools it re-serialised, not the request's JSON, into the "
            "prompt; the fixture model knows only the prompts it was trained on (fixtures/tiny_r1_build/"
            "tool_tasks.py) and answers others with noise, so its tool calls need a real model on this engine"
        )
    params.setdefault("max_tokens", max(ctx.answer_max_tokens, TOOL_MAX_TOKENS))
    return ctx.chat_body(content, **params)


def _tool_reply(ctx: ApiContext) -> dict[str, Any]:
    reply = ctx.memo("tool_reply", lambda: ctx.api.post("/v1/chat/completions", _tool_body(ctx)))
    return ok_json(reply, "chat with the get_weather tool")


def _no_markers(text: Any, what: str) -> None:
    leaked = [m for m in RAW_TOOL_MARKERS if isinstance(text, str) and m in text]
    expect(not leaked, what, desc("no raw DeepSeek tool-call markers"), text)


def _valid_arguments(arguments: Any, what: str, tool: dict[str, Any] = WEATHER_TOOL) -> dict[str, Any]:
    """``arguments`` is a JSON text of an object that validates against the tool's parameter schema."""
    value = parse_json(arguments, f"{what} function.arguments")
    schema = tool["function"]["parameters"]
    errors = schema_errors(value, schema) if isinstance(value, dict) else ["not a JSON object"]
    expect(not errors, f"{what} function.arguments", desc(f"a JSON object valid against {json.dumps(schema)}"),
           f"{arguments}: {'; '.join(errors)}")
    return dict(value)


def _tool_calls(body: dict[str, Any], what: str) -> list[dict[str, Any]]:
    calls = message_of(body, what).get("tool_calls") or []
    expect(isinstance(calls, list), f"{what} message.tool_calls", desc("a list or null"), calls)
    return list(calls)


def _streamed_calls(choice: ChoiceStream, what: str) -> dict[int, dict[str, Any]]:
    """The streamed tool calls by index: the first delta of an index carries id and function.name, later ones
    only function.arguments pieces, joined in order."""
    calls: dict[int, dict[str, Any]] = {}
    for delta in choice.tool_deltas:
        index = delta.get("index")
        expect(isinstance(index, int), f"{what}: tool_calls delta index", desc("an integer"), delta)
        assert isinstance(index, int)
        function = delta.get("function") or {}
        if index not in calls:
            expect(bool(delta.get("id")) and bool(function.get("name")), f"{what}: first tool_calls delta of "
                   f"index {index}", desc("id and function.name"), delta)
            calls[index] = {"id": delta["id"], "name": function["name"], "arguments": ""}
        calls[index]["arguments"] += str(function.get("arguments") or "")
    return calls


def _stream_choice(ctx: ApiContext, body: dict[str, Any], what: str) -> ChoiceStream:
    stream = ok_stream(ctx.api.stream("/v1/chat/completions", body), what)
    choice = stream.choices().get(0)
    expect(choice is not None, what, desc("a choice 0"), desc("none"))
    assert choice is not None
    return choice


@check(
    "M01.tool_call_nonstream",
    "A tool request returns tool_calls (id, type function, name, JSON "
    "arguments that fit the schema), finish_reason tool_calls, no raw DeepSeek markers in content",
    severity="MUST",
    requires=("tools",),
    faults=("tool_calls_in_content", "tool_finish_reason_stop"),
    source=f"{REFERENCE} M01; [DeepSeek-V3 #944](https://github.com/deepseek-ai/DeepSeek-V3/issues/944)",
    deviations={
        "vllm": "the cpu and gpu1 profiles launch it with --tool-call-parser deepseek_v3; an attached vLLM is taken "
                "to have no tool parser",
        "lmdeploy": "no DeepSeek V3/R1 tool parser",
    },
)
def tool_call_nonstream(ctx: ApiContext) -> None:
    body = _tool_reply(ctx)
    message = message_of(body, "tool chat")
    _no_markers(message.get("content"), "tool chat content")
    calls = message.get("tool_calls")
    expect(isinstance(calls, list) and len(calls) > 0, "tool chat message.tool_calls", desc("a non-empty list"),
           calls)
    assert isinstance(calls, list)
    for call in calls:
        expect(isinstance(call.get("id"), str) and call["id"] != "", "tool call id", desc("a non-empty string"),
               call.get("id"))
        expect_eq(call.get("type"), "function", "tool call type")
        expect_eq((call.get("function") or {}).get("name"), "get_weather", "tool call function.name")
        _valid_arguments((call.get("function") or {}).get("arguments"), "tool call")
    expect_eq(choice0(body, "tool chat").get("finish_reason"), "tool_calls", "tool chat finish_reason")


@check(
    "M02.tool_call_stream_assembly",
    "Streamed tool calls: indexed deltas, id and name first, then argument "
    "pieces that join to the non-streamed arguments; no raw markers in content; finish_reason tool_calls",
    severity="MUST",
    requires=("tools",),
    faults=("stream_tool_args_empty", "tool_finish_reason_stop", "tool_calls_in_content"),
    source=f"{REFERENCE} M02; [sglang PR #18236](https://github.com/sgl-project/sglang/pull/18236)",
)
def tool_call_stream_assembly(ctx: ApiContext) -> None:
    what = "streamed tool chat"
    choice = _stream_choice(ctx, _tool_body(ctx, stream=True), what)
    _no_markers(choice.field_text("content"), f"{what} content")
    expect(bool(choice.tool_deltas), what, desc("tool_calls deltas"), desc("none"))
    calls = _streamed_calls(choice, what)
    arguments = calls[min(calls)]["arguments"]
    _valid_arguments(arguments, "streamed tool call")
    reply_calls = message_of(_tool_reply(ctx), "tool chat").get("tool_calls") or [{}]
    expect_eq(arguments, (reply_calls[0].get("function") or {}).get("arguments"),
              "streamed tool-call arguments (the non-streamed arguments)")
    expect_eq(choice.finish_reasons, ["tool_calls"], f"{what} finish_reason")


@check(
    "M03.tool_choice_none",
    "tool_choice 'none' with tools given: no tool_calls, finish_reason stop or length",
    severity="SHOULD",
    requires=("tools",),
    faults=("tool_choice_none_ignored",),
    source=f"{REFERENCE} M03",
)
def tool_choice_none(ctx: ApiContext) -> None:
    what = "tool chat with tool_choice 'none'"
    body = ok_json(ctx.api.post("/v1/chat/completions", _tool_body(ctx, tool_choice="none")), what)
    expect_eq(_tool_calls(body, what), [], f"{what} message.tool_calls")
    reason = choice0(body, what).get("finish_reason")
    expect(reason in ("stop", "length"), f"{what} finish_reason", desc("stop or length"), reason)


@check(
    "M04.tool_choice_named_or_required",
    "A named tool_choice calls that tool, and 'required' calls a tool, even for a question that needs none; the "
    "arguments of these strict tools validate against the schema",
    severity="SHOULD",
    requires=("tools",),
    faults=("tool_choice_named_ignored", "tool_choice_required_ignored"),
    source=f"{REFERENCE} M04",
)
def tool_choice_named_or_required(ctx: ApiContext) -> None:
    for what, tools, choice in _FORCED:
        what = f"{what} (question {ctx.task.question!r})"
        body = ok_json(ctx.api.post("/v1/chat/completions", _tool_body(ctx, ctx.task.question, tools=tools,
                                                                       tool_choice=choice)), what)
        calls = _tool_calls(body, what)
        expect(bool(calls), f"{what} message.tool_calls", desc("a call"), calls)
        for call in calls:
            expect_eq((call.get("function") or {}).get("name"), "get_weather", f"{what}: function.name")
            _valid_arguments((call.get("function") or {}).get("arguments"), what)
        _no_markers(message_of(body, what).get("content"), f"{what} content")


@check(
    "M05.tool_result_roundtrip",
    "A conversation with the assistant's tool call (content null) and the "
    "tool's result, as a string and as text parts, gets an answer that uses the result",
    severity="MUST",
    requires=("tools",),
    faults=("tool_result_rejected",),
    source=f"{REFERENCE} M05; [sglang #17551](https://github.com/sgl-project/sglang/issues/17551)",
)
def tool_result_roundtrip(ctx: ApiContext) -> None:
    for form, tool_content in (("string", TOOL_RESULT), ("text parts", [{"type": "text", "text": TOOL_RESULT}])):
        what = f"chat with a tool result ({form} content)"
        body = ok_json(ctx.api.post("/v1/chat/completions", _tool_body(
            ctx, None, messages=tool_result_messages(tool_content), tool_choice="auto")), what)
        content = message_of(body, what).get("content") or ""
        expect("22" in content, f"{what}: the answer", desc(f"content that uses {TOOL_RESULT!r}"), content)
        expect_eq(choice0(body, what).get("finish_reason"), "stop", f"{what} finish_reason")


def _two_city_calls(ctx: ApiContext, **params: Any) -> list[dict[str, Any]]:
    what = "tool chat about two cities" + (" with parallel_tool_calls=false" if params else "")
    reply = ctx.api.post("/v1/chat/completions", _tool_body(ctx, TWO_CITY_QUESTION, **params))
    return _tool_calls(ok_json(reply, what), what)


@check(
    "M06.parallel_tool_calls_false",
    "parallel_tool_calls=false returns at most one tool call, even when the question asks for two",
    severity="SHOULD",
    requires=("tools",),
    faults=("parallel_tool_calls_ignored",),
    source=f"{REFERENCE} M06; LMDeploy maybe_filter_parallel_tool_calls",
)
def parallel_tool_calls_false(ctx: ApiContext) -> None:
    calls = _two_city_calls(ctx, parallel_tool_calls=False)
    expect(len(calls) <= 1, "tool chat about two cities with parallel_tool_calls=false: tool calls",
           desc("at most one"), [(c.get("function") or {}).get("arguments") for c in calls])


@check(
    "M07.tool_call_ids_unique",
    "Tool-call ids are unique within a response and across responses",
    severity="SHOULD",
    requires=("tools",),
    faults=("tool_call_id_constant",),
    source=f"{REFERENCE} M07; {REFERENCE} C06",
)
def tool_call_ids_unique(ctx: ApiContext) -> None:
    calls = _two_city_calls(ctx)
    expect(bool(calls), "tool chat about two cities message.tool_calls", desc("at least one call"), calls)
    ids = [c.get("id") for c in calls]
    expect(len(set(ids)) == len(ids), "tool-call ids within the two-city response", desc("distinct"), ids)
    other = [c.get("id") for c in message_of(_tool_reply(ctx), "tool chat").get("tool_calls") or []]
    shared = sorted(set(ids) & set(other), key=str)
    expect(not shared, "tool-call ids of two responses", desc("no id in both"), shared)


@check(
    "M08.parallel_tool_calls",
    "A question that needs two calls gets both, streamed and not: two calls with their own arguments, the "
    "streamed ones equal to the non-streamed ones",
    severity="SHOULD",
    requires=("tools",),
    faults=("parallel_tool_calls_merged",),
    source=f"{REFERENCE} M02; [sglang #6310](https://github.com/sgl-project/sglang/issues/6310)",
)
def parallel_tool_calls(ctx: ApiContext) -> None:
    what = "tool chat about two cities"
    calls = _two_city_calls(ctx)
    arguments = [_valid_arguments((c.get("function") or {}).get("arguments"), what) for c in calls]
    expect(len(calls) == 2 and arguments[0] != arguments[1], f"{what}: tool calls",
           desc("two calls with different arguments"), [(c.get("function") or {}).get("arguments") for c in calls])
    choice = _stream_choice(ctx, _tool_body(ctx, TWO_CITY_QUESTION, stream=True), f"streamed {what}")
    streamed = _streamed_calls(choice, f"streamed {what}")
    expect_eq([(c["name"], c["arguments"]) for _, c in sorted(streamed.items())],
              [((c.get("function") or {}).get("name"), (c.get("function") or {}).get("arguments")) for c in calls],
              f"streamed {what}: (name, arguments) by index (the non-streamed calls)")


@check(
    "M09.reasoning_before_tool_call",
    "R1 reasons before it calls: the reasoning field has the reasoning and no tool-call markers, the arguments "
    "none of the reasoning, streamed and not",
    severity="SHOULD",
    requires=("tools", "reasoning"),
    faults=("tool_block_in_reasoning", "reasoning_in_tool_arguments"),
    source=f"{REFERENCE} N11; {REFERENCE} M01",
)
def reasoning_before_tool_call(ctx: ApiContext) -> None:
    key = ctx.behaviour.reasoning_field
    message = message_of(_tool_reply(ctx), "tool chat")
    stream = _stream_choice(ctx, _tool_body(ctx, stream=True), "streamed tool chat")
    streamed_arguments = [c["arguments"] for c in _streamed_calls(stream, "streamed tool chat").values()]
    for what, reasoning, arguments in (
        ("tool chat", ctx.reasoning_of(message), [(c.get("function") or {}).get("arguments")
                                                   for c in message.get("tool_calls") or []]),
        ("streamed tool chat", stream.field_text(key), streamed_arguments),
    ):
        expect(isinstance(reasoning, str) and reasoning.strip() != "", f"{what} {key}", desc("the reasoning"),
               reasoning)
        _no_markers(reasoning, f"{what} {key}")
        expect(bool(arguments), f"{what} tool calls", desc("a call after the reasoning"), arguments)
        for text in arguments:
            _valid_arguments(text, what)
            expect(str(reasoning).strip() not in str(text), f"{what} function.arguments",
                   desc("none of the reasoning"), text)


@check(
    "M10.tool_choice_forced_stream",
    "Streamed, a named tool_choice and 'required' come as tool_calls deltas of that tool with JSON arguments, "
    "not as raw DeepSeek markers in content",
    severity="SHOULD",
    requires=("tools",),
    faults=("stream_forced_tool_in_content",),
    source=f"{REFERENCE} M02; {REFERENCE} M04",
)
def tool_choice_forced_stream(ctx: ApiContext) -> None:
    for what, tools, choice in _FORCED:
        what = f"streamed {what} (question {ctx.task.question!r})"
        stream = _stream_choice(ctx, _tool_body(ctx, ctx.task.question, tools=tools, tool_choice=choice,
                                                stream=True), what)
        _no_markers(stream.field_text("content"), f"{what} content")
        calls = _streamed_calls(stream, what)
        expect(bool(calls), f"{what}: tool_calls deltas", desc("a call"), desc("none"))
        for call in calls.values():
            expect_eq(call["name"], "get_weather", f"{what}: function.name")
            _valid_arguments(call["arguments"], what)


@check(
    "M11.tool_choice_auto_without_need",
    "tool_choice 'auto' with tools offered and a question that needs none: an answer, no tool call",
    severity="SHOULD",
    requires=("tools",),
    faults=("tool_called_without_need",),
    source=f"{REFERENCE} M03; OpenAI tool_choice auto (the model decides)",
)
def tool_choice_auto_without_need(ctx: ApiContext) -> None:
    what = f"tool chat with tool_choice 'auto' (question {ctx.task.question!r})"
    body = ok_json(ctx.api.post("/v1/chat/completions", _tool_body(ctx, ctx.task.question)), what)
    expect_eq(_tool_calls(body, what), [], f"{what} message.tool_calls")
    content = message_of(body, what).get("content")
    expect(isinstance(content, str) and content.strip() != "", f"{what} content", desc("an answer"), content)
    if ctx.task_only_model:
        expect(ctx.task.answer in str(content), f"{what} content", desc(f"the answer {ctx.task.answer!r}"), content)
    expect_eq(choice0(body, what).get("finish_reason"), "stop", f"{what} finish_reason")


@check(
    "B16.tools_without_parser",
    "A chat request with tools is never a 5xx, with or without a tool parser (without one: 200 with the tool-call "
    "text left in content, as vLLM and SGLang answer, or a 4xx naming the missing parser, as LMDeploy does)",
    severity="SHOULD",
    faults=("tools_500",),
    source=f"{REFERENCE} B16 (vLLM branch 'not enable_auto_tools or not tool_parser_cls')",
)
def tools_without_parser(ctx: ApiContext) -> None:
    # In group B (request validation) but here, beside the tool requests it sends.
    what = "chat with tools" + ("" if "tools" in ctx.behaviour.features else " (profile: no tool parser)")
    reply = ctx.api.post("/v1/chat/completions", _tool_body(ctx, judges_the_answer=False))
    if reply.status >= 500:
        fail(what, desc("HTTP 200 or a 4xx client error"), desc(reply.describe()))
