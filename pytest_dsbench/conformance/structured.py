"""L. Structured outputs; M. tool calling (only where the engine runs a DeepSeek tool parser).

Structured output is checked on any model, the fixture model included: an engine's guided decoding
(xgrammar, outlines, llguidance) masks every token that would break the format, so a schema-valid answer is
the engine's guarantee whatever the weights. A tiny model may loop on the whitespace a JSON grammar allows; the
embedded engine is launched with ``disable_any_whitespace`` for that (thresholds/cpu.toml).
"""

from __future__ import annotations

import json
import re
from typing import Any

from pytest_dsbench.conformance.catalog import REFERENCE, check
from pytest_dsbench.conformance.common import choice0, message_of, ok_json, ok_stream
from pytest_dsbench.conformance.context import ApiContext
from pytest_dsbench.conformance.expect import desc, expect, expect_eq, fail, skip

ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
    "required": ["answer"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TOOL_QUESTION = "What's the weather in Paris? Use the tool."
RAW_TOOL_MARKERS = ("<｜tool▁calls▁begin｜>", "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>")
CONSTRAINT_REGEX = r"[0-9]{3}-(yes|no)"
CONSTRAINT_CHOICES = ("alpha", "beta", "gamma")


def _question(ctx: ApiContext, free_text: str) -> str:
    """What to ask under a constraint. An R1 engine applies the grammar only after ``</think>``, so the model
    must end its reasoning: the fixture model does that only for its own tasks (on anything else it ends the
    whole answer inside the reasoning, and no constrained content is ever generated)."""
    return ctx.task.question if ctx.task_only_model else free_text


def _schema_reply(ctx: ApiContext) -> dict[str, Any]:
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA}}
    question = _question(ctx, "Is Paris in France? Answer yes or no.")
    reply = ctx.memo("json_schema_reply", lambda: ctx.chat(question, response_format=fmt))
    return ok_json(reply, "chat with a json_schema response_format")


def _parse_json(text: Any, what: str, finish_reason: Any = None) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        if finish_reason == "length":
            what += " (finish_reason length: max_tokens ran out inside the value)"
        fail(what, desc("JSON text"), text)


def _schema_errors(value: Any, schema: dict[str, Any]) -> list[str]:
    """Every violation of ``schema`` by ``value`` (JSON Schema, the draft the schema declares)."""
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in validator.iter_errors(value)]


def _constraint_params(ctx: ApiContext, kind: str, value: Any) -> dict[str, Any]:
    """Request parameters that constrain the output to ``regex`` or ``choice``, the engine's way."""
    style = ctx.behaviour.constraint_params
    if style == "structured_outputs":  # vLLM
        return {"structured_outputs": {kind: value}}
    pattern = value if kind == "regex" else "(" + "|".join(re.escape(c) for c in value) + ")"
    if style == "top_level_regex":  # SGLang
        return {"regex": pattern}
    if style == "regex_schema":  # LMDeploy
        return {"response_format": {"type": "regex_schema", "regex_schema": pattern}}
    skip(f"engine {ctx.target.engine} declares no regex/choice constraint parameters")


@check(
    "L01.response_format_text",
    "response_format {type: text} is accepted and answers normally",
    severity="MUST",
    faults=("reject_response_format_text",),
    source=f"{REFERENCE} L01",
)
def response_format_text(ctx: ApiContext) -> None:
    body = ok_json(ctx.chat(response_format={"type": "text"}), "chat with response_format text")
    expect(
        bool(message_of(body, "chat").get("content")),
        "response_format text content",
        desc("non-empty"),
        message_of(body, "chat").get("content"),
    )


@check(
    "L02.response_format_json_object",
    "response_format json_object makes the content a JSON object",
    severity="SHOULD",
    requires=("structured_output",),
    faults=("ignore_response_format", "json_truncated"),
    source=f"{REFERENCE} L02; vLLM test_response_format_json_object",
)
def response_format_json_object(ctx: ApiContext) -> None:
    body = ok_json(
        ctx.chat(_question(ctx, "Reply with a JSON object."), response_format={"type": "json_object"}),
        "chat with response_format json_object",
    )
    finish = choice0(body, "chat").get("finish_reason")
    value = _parse_json(message_of(body, "chat").get("content"), "json_object content", finish)
    expect(isinstance(value, dict), "json_object content", desc("a JSON object"), value)


@check(
    "L03.response_format_json_schema",
    "response_format json_schema makes the content validate against the schema, with finish_reason stop",
    severity="SHOULD",
    requires=("structured_output",),
    faults=("ignore_response_format", "json_truncated", "json_schema_violated"),
    source=f"{REFERENCE} L03; vLLM test_response_format_json_schema",
)
def response_format_json_schema(ctx: ApiContext) -> None:
    body = _schema_reply(ctx)
    finish = choice0(body, "chat").get("finish_reason")
    value = _parse_json(message_of(body, "chat").get("content"), "json_schema content", finish)
    errors = _schema_errors(value, ANSWER_SCHEMA)
    expect(not errors, "json_schema content", desc(f"valid against {json.dumps(ANSWER_SCHEMA)}"),
           f"{json.dumps(value)}: {'; '.join(errors)}")
    expect_eq(finish, "stop", "json_schema finish_reason")


@check(
    "L04.structured_output_with_reasoning",
    "With R1 reasoning, structured output lands in content, not in the reasoning field",
    severity="SHOULD",
    requires=("structured_output", "reasoning"),
    faults=("json_in_reasoning",),
    source=f"{REFERENCE} L04; [vllm #15618](https://github.com/vllm-project/vllm/issues/15618)",
)
def structured_output_with_reasoning(ctx: ApiContext) -> None:
    message = message_of(_schema_reply(ctx), "chat")
    content = message.get("content")
    expect(
        isinstance(content, str) and content.strip().startswith("{"),
        "json_schema content with reasoning",
        desc("the JSON object"),
        content,
    )
    reasoning = ctx.reasoning_of(message) or ""
    expect(
        '"answer"' not in reasoning,
        f"message.{ctx.behaviour.reasoning_field}",
        desc("no JSON answer in it"),
        reasoning,
    )


@check(
    "L05.regex_choice_constraints",
    "A regex constraint makes the content match it in full; a choice constraint makes it one of the choices",
    severity="EXT",
    requires=("structured_output",),
    faults=("ignore_constraints",),
    source=f"{REFERENCE} L05; vLLM structured_outputs regex/choice, SGLang regex, LMDeploy regex_schema",
)
def regex_choice_constraints(ctx: ApiContext) -> None:
    regex_body = ok_json(
        ctx.chat(_question(ctx, "Give a code."), **_constraint_params(ctx, "regex", CONSTRAINT_REGEX)),
        "chat with a regex",
    )
    content = message_of(regex_body, "chat with a regex").get("content")
    expect(
        isinstance(content, str) and re.fullmatch(CONSTRAINT_REGEX, content) is not None,
        "regex-constrained content",
        desc(f"a full match of {CONSTRAINT_REGEX!r}"),
        content,
    )
    choice_body = ok_json(
        ctx.chat(_question(ctx, "Pick one."), **_constraint_params(ctx, "choice", list(CONSTRAINT_CHOICES))),
        "chat with a choice",
    )
    picked = message_of(choice_body, "chat with a choice").get("content")
    expect(picked in CONSTRAINT_CHOICES, "choice-constrained content", desc(f"one of {list(CONSTRAINT_CHOICES)}"),
           picked)


def _tool_body(ctx: ApiContext, **params: Any) -> dict[str, Any]:
    return ctx.chat_body(TOOL_QUESTION, tools=[WEATHER_TOOL], tool_choice="auto", **params)


def _tool_reply(ctx: ApiContext) -> dict[str, Any]:
    reply = ctx.memo("tool_reply", lambda: ctx.api.post("/v1/chat/completions", _tool_body(ctx)))
    return ok_json(reply, "chat with the get_weather tool")


def _valid_arguments(arguments: Any, what: str) -> dict[str, Any]:
    value = _parse_json(arguments, f"{what} function.arguments")
    expect(
        isinstance(value, dict) and isinstance(value.get("city"), str),
        f"{what} function.arguments",
        desc('a JSON object with a string "city"'),
        value,
    )
    return dict(value)


@check(
    "M01.tool_call_nonstream",
    "A tool request returns tool_calls (id, type function, name, JSON "
    "arguments that fit the schema), finish_reason tool_calls, no raw DeepSeek markers in content",
    severity="MUST",
    requires=("tools",),
    faults=("tool_calls_in_content", "tool_finish_reason_stop"),
    source=f"{REFERENCE} M01; [DeepSeek-V3 #944](https://github.com/deepseek-ai/DeepSeek-V3/issues/944)",
    deviations={
        "vllm": "needs --tool-call-parser deepseek_v3 (not in the default launch)",
        "lmdeploy": "no DeepSeek V3/R1 tool parser",
    },
)
def tool_call_nonstream(ctx: ApiContext) -> None:
    body = _tool_reply(ctx)
    message = message_of(body, "tool chat")
    content = message.get("content") or ""
    leaked = [m for m in RAW_TOOL_MARKERS if m in content]
    expect(not leaked, "tool chat content", desc("no raw DeepSeek tool-call markers"), content)
    calls = message.get("tool_calls")
    expect(
        isinstance(calls, list) and len(calls) > 0,
        "tool chat message.tool_calls",
        desc("a non-empty list"),
        calls,
    )
    assert isinstance(calls, list)
    for call in calls:
        expect(
            isinstance(call.get("id"), str) and call["id"] != "",
            "tool call id",
            desc("a non-empty string"),
            call.get("id"),
        )
        expect_eq(call.get("type"), "function", "tool call type")
        expect_eq((call.get("function") or {}).get("name"), "get_weather", "tool call function.name")
        _valid_arguments((call.get("function") or {}).get("arguments"), "tool call")
    expect_eq(choice0(body, "tool chat").get("finish_reason"), "tool_calls", "tool chat finish_reason")


@check(
    "M02.tool_call_stream_assembly",
    "Streamed tool calls: indexed deltas, id and name first, then argument "
    "pieces that join to the non-streamed arguments; finish_reason tool_calls",
    severity="MUST",
    requires=("tools",),
    faults=("stream_tool_args_empty", "tool_finish_reason_stop"),
    source=f"{REFERENCE} M02; [sglang PR #18236](https://github.com/sgl-project/sglang/pull/18236)",
)
def tool_call_stream_assembly(ctx: ApiContext) -> None:
    stream = ok_stream(
        ctx.api.stream("/v1/chat/completions", _tool_body(ctx, stream=True)), "streamed tool chat"
    )
    choice = stream.choices().get(0)
    expect(
        choice is not None and bool(choice.tool_deltas),
        "streamed tool chat",
        desc("tool_calls deltas"),
        desc("none"),
    )
    assert choice is not None
    first = choice.tool_deltas[0]
    expect(isinstance(first.get("index"), int), "first tool_calls delta index", desc("an integer"), first)
    expect(
        bool(first.get("id")) and bool((first.get("function") or {}).get("name")),
        "first tool_calls delta",
        desc("id and function.name"),
        first,
    )
    arguments = "".join(str((d.get("function") or {}).get("arguments") or "") for d in choice.tool_deltas)
    _valid_arguments(arguments, "streamed tool call")
    calls = message_of(_tool_reply(ctx), "tool chat").get("tool_calls") or [{}]
    expect_eq(
        arguments,
        (calls[0].get("function") or {}).get("arguments"),
        "streamed tool-call arguments (the non-streamed arguments)",
    )
    expect_eq(choice.finish_reasons, ["tool_calls"], "streamed tool chat finish_reason")


@check(
    "M05.tool_result_roundtrip",
    "A conversation with the assistant's tool call (content null) and the "
    "tool's result gets an answer that uses the result",
    severity="MUST",
    requires=("tools",),
    faults=("tool_result_rejected",),
    source=f"{REFERENCE} M05; [sglang #17551](https://github.com/sgl-project/sglang/issues/17551)",
)
def tool_result_roundtrip(ctx: ApiContext) -> None:
    messages = [
        {"role": "user", "content": TOOL_QUESTION},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_dsbench_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_dsbench_1", "content": "22°C and sunny"},
    ]
    body = ok_json(
        ctx.api.post("/v1/chat/completions", ctx.chat_body(messages=messages, tools=[WEATHER_TOOL])),
        "chat with a tool result",
    )
    content = message_of(body, "tool result chat").get("content") or ""
    expect("22" in content, "answer after the tool result", desc("content that uses '22°C'"), content)
    expect_eq(
        choice0(body, "tool result chat").get("finish_reason"), "stop", "tool result chat finish_reason"
    )


TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current local time in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TWO_CITY_QUESTION = "What's the weather in Paris and in Rome? Call the tool once for each city."


def _tool_calls(body: dict[str, Any], what: str) -> list[dict[str, Any]]:
    calls = message_of(body, what).get("tool_calls") or []
    expect(isinstance(calls, list), f"{what} message.tool_calls", desc("a list or null"), calls)
    return list(calls)


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
    body = ok_json(
        ctx.api.post(
            "/v1/chat/completions", ctx.chat_body(TOOL_QUESTION, tools=[WEATHER_TOOL], tool_choice="none")
        ),
        what,
    )
    expect_eq(_tool_calls(body, what), [], f"{what} message.tool_calls")
    reason = choice0(body, what).get("finish_reason")
    expect(reason in ("stop", "length"), f"{what} finish_reason", desc("stop or length"), reason)


@check(
    "M04.tool_choice_named_or_required",
    "A named tool_choice calls that tool, and 'required' calls a tool, even for a question that needs none",
    severity="SHOULD",
    requires=("tools",),
    faults=("tool_choice_named_ignored", "tool_choice_required_ignored"),
    source=f"{REFERENCE} M04",
)
def tool_choice_named_or_required(ctx: ApiContext) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    for what, tools, choice in (
        ("tool chat with a named tool_choice get_weather", [TIME_TOOL, WEATHER_TOOL], named),
        ("tool chat with tool_choice 'required'", [WEATHER_TOOL], "required"),
    ):
        body = ok_json(
            ctx.api.post("/v1/chat/completions", ctx.chat_body(ctx.task.question, tools=tools, tool_choice=choice)),
            f"{what} (question {ctx.task.question!r})",
        )
        calls = _tool_calls(body, what)
        expect(bool(calls), f"{what} (question {ctx.task.question!r}) message.tool_calls", desc("a call"), calls)
        for call in calls:
            expect_eq((call.get("function") or {}).get("name"), "get_weather", f"{what}: function.name")
            _valid_arguments((call.get("function") or {}).get("arguments"), what)


def _two_city_calls(ctx: ApiContext, **params: Any) -> list[dict[str, Any]]:
    body = ctx.chat_body(TWO_CITY_QUESTION, tools=[WEATHER_TOOL], tool_choice="auto", **params)
    what = "tool chat about two cities" + (" with parallel_tool_calls=false" if params else "")
    return _tool_calls(ok_json(ctx.api.post("/v1/chat/completions", body), what), what)


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
    expect(
        len(calls) <= 1,
        "tool chat about two cities with parallel_tool_calls=false: tool calls",
        desc("at most one"),
        [(c.get("function") or {}).get("arguments") for c in calls],
    )


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
