"""L. Structured outputs (M, tool calling, is :mod:`pytest_dsbench.conformance.tools`).

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
from pytest_dsbench.conformance.common import choice0, message_of, ok_json
from pytest_dsbench.conformance.context import ApiContext
from pytest_dsbench.conformance.expect import desc, expect, expect_eq, fail, skip

ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
    "required": ["answer"],
    "additionalProperties": False,
}
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


def parse_json(text: Any, what: str, finish_reason: Any = None) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        if finish_reason == "length":
            what += " (finish_reason length: max_tokens ran out inside the value)"
        fail(what, desc("JSON text"), text)


def schema_errors(value: Any, schema: dict[str, Any]) -> list[str]:
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
    value = parse_json(message_of(body, "chat").get("content"), "json_object content", finish)
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
    value = parse_json(message_of(body, "chat").get("content"), "json_schema content", finish)
    errors = schema_errors(value, ANSWER_SCHEMA)
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
