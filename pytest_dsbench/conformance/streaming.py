"""G. Streaming (SSE) framing and chunk semantics; H. streaming usage (``stream_options``)."""

from __future__ import annotations

from functools import partial
from typing import Any

from pytest_dsbench.conformance.capacity import (
    abandon_stream,
    long_generation,
    parallel,
    running_gauge,
    wait_for_release,
)
from pytest_dsbench.conformance.catalog import REFERENCE, check
from pytest_dsbench.conformance.client import ChoiceStream, StreamReply
from pytest_dsbench.conformance.common import (
    choice0,
    completion_reference,
    completion_stream,
    consistent_usage,
    message_of,
    ok_json,
    ok_stream,
    r1_body,
    r1_stream,
    rejected,
    text_of,
    usage_of,
)
from pytest_dsbench.conformance.context import ApiContext
from pytest_dsbench.conformance.expect import desc, expect, expect_eq, fail, skip


def _streams(ctx: ApiContext) -> list[tuple[str, str, StreamReply]]:
    return [
        ("chat", "chat.completion.chunk", r1_stream(ctx)),
        ("completions", "text_completion", completion_stream(ctx)),
    ]


@check(
    "G01.sse_content_type",
    "Streams answer HTTP 200 with Content-Type text/event-stream",
    severity="MUST",
    faults=("stream_content_type_wrong",),
    source=f"{REFERENCE} G01",
)
def sse_content_type(ctx: ApiContext) -> None:
    for what, _, stream in _streams(ctx):
        expect_eq(stream.status, 200, f"streamed {what} HTTP status")
        expect_eq(stream.content_type, "text/event-stream", f"streamed {what} Content-Type")


@check(
    "G02.sse_framing",
    "Every event is one 'data:' line and a blank line, payloads are JSON, the last is "
    "'data: [DONE]' and nothing follows; no data-less block the openai SDK reads as an empty event",
    severity="MUST",
    faults=("no_done", "sse_event_field", "data_after_done", "sse_unterminated_last_event", "sse_retry_block",
            "sse_ids_with_keepalives"),
    source=f"{REFERENCE} G02; vLLM test_chat_error (`data: [DONE]\\n\\n`)",
)
def sse_framing(ctx: ApiContext) -> None:
    for what, _, stream in _streams(ctx):
        expect_eq(stream.status, 200, f"streamed {what} HTTP status")
        expect(
            not stream.stream.problems,
            f"streamed {what} SSE framing",
            desc("no framing problems"),
            "; ".join(stream.stream.problems[:3]),
        )


def _sdk_chunk(chunk: dict[str, Any], what: str) -> None:
    """Second opinion from the openai SDK's ChatCompletionChunk model, when the SDK is installed."""
    try:
        from openai.types.chat import ChatCompletionChunk as model
    except ImportError:
        return
    try:
        model.model_validate(chunk)
    except Exception as exc:
        fail(
            f"{what}: openai SDK {model.__name__} validation",
            desc("a chunk the SDK accepts"),
            str(exc).splitlines()[0:3],
        )


@check(
    "G03.stream_chunk_schema",
    "Chunks carry the right object, one id / created / model for the whole "
    "response (usage chunk included) and indexed choices",
    severity="MUST",
    faults=("stream_id_changes", "stream_object_wrong"),
    source=f"{REFERENCE} G03; [SGLang PR #3760](https://github.com/sgl-project/sglang/pull/3760)",
)
def stream_chunk_schema(ctx: ApiContext) -> None:
    for what, obj, stream in _streams(ctx):
        ok_stream(stream, f"streamed {what}")
        chunks = stream.chunks
        expect(len(chunks) > 0, f"streamed {what}", desc("at least one chunk"), 0)
        for field in ("id", "created", "model"):
            values = {repr(c.get(field)) for c in chunks}
            expect(
                len(values) == 1,
                f"streamed {what} '{field}' across chunks",
                desc("one value"),
                sorted(values),
            )
        objects = sorted({str(c.get("object")) for c in chunks})
        expect_eq(objects, [obj], f"streamed {what} 'object' of the chunks")
        for chunk in chunks:
            choices = chunk.get("choices")
            expect(isinstance(choices, list), f"streamed {what} chunk 'choices'", desc("a list"), choices)
            assert isinstance(choices, list)
            for choice in choices:
                expect(
                    isinstance(choice.get("index"), int),
                    f"streamed {what} choice 'index'",
                    desc("an integer"),
                    choice,
                )
                if what == "chat":
                    expect(
                        isinstance(choice.get("delta"), dict), "chat chunk 'delta'", desc("an object"), choice
                    )
            if what == "chat":
                _sdk_chunk(chunk, "streamed chat chunk")


@check(
    "G04.stream_first_chunk_role",
    "The first chat chunk of each choice carries role assistant; a later role is absent, null or assistant",
    severity="MUST",
    faults=("no_role_in_first_chunk", "role_empty_later"),
    source=f"{REFERENCE} G04; SGLang run_chat_completion_stream",
    deviations={"lmdeploy": "role on every delta (allowed)"},
)
def stream_first_chunk_role(ctx: ApiContext) -> None:
    choices = ok_stream(r1_stream(ctx), "streamed chat").choices()
    for index, choice in choices.items():
        expect_eq(choice.first_role, "assistant", f"streamed chat choice {index}: role of its first chunk")
        bad = [r for r in choice.roles[1:] if r not in (None, "assistant")]
        expect(
            not bad, f"streamed chat choice {index}: later roles", desc("absent, null or 'assistant'"), bad
        )


@check(
    "G05.stream_finish_reason_exactly_once",
    "Each choice gets exactly one non-null finish_reason, and no text follows it",
    severity="MUST",
    faults=("duplicate_finish_reason", "content_after_finish"),
    source=f"{REFERENCE} G05; vLLM test_chat_streaming",
)
def stream_finish_reason_exactly_once(ctx: ApiContext) -> None:
    for what, _, stream in _streams(ctx):
        for index, choice in ok_stream(stream, f"streamed {what}").choices().items():
            expect(
                len(choice.finish_reasons) == 1,
                f"streamed {what} choice {index}: chunks with a finish_reason",
                1,
                choice.finish_reasons,
            )
            expect_eq(
                choice.deltas_after_finish, 0, f"streamed {what} choice {index}: deltas after the finish"
            )


@check(
    "G06.stream_equals_nonstream",
    "At temperature 0, streamed content, reasoning and finish_reason equal "
    "the non-streamed response (chat and completions)",
    severity="MUST",
    greedy_retries=2,
    faults=("stream_content_differs", "stream_reasoning_differs"),
    source=f"{REFERENCE} G06; [lmdeploy #3321](https://github.com/InternLM/lmdeploy/issues/3321)",
)
def stream_equals_nonstream(ctx: ApiContext) -> None:
    message = message_of(r1_body(ctx), "chat")
    streamed = ok_stream(r1_stream(ctx), "streamed chat").choices().get(0)
    expect(streamed is not None, "streamed chat", desc("a choice with index 0"), None)
    assert streamed is not None
    for key in ("content", ctx.behaviour.reasoning_field):
        expect_eq(
            streamed.field_text(key).strip(),
            str(message.get(key) or "").strip(),
            f"streamed chat joined '{key}' deltas (the non-streamed message.{key})",
        )
    expect_eq(
        streamed.finish_reasons[-1:],
        [choice0(r1_body(ctx), "chat").get("finish_reason")],
        "streamed chat finish_reason",
    )
    completion = completion_reference(ctx)
    streamed_text = ok_stream(completion_stream(ctx), "streamed completion").choices().get(0)
    expect_eq(
        streamed_text.text if streamed_text else None,
        text_of(completion),
        "streamed completion joined text (the non-streamed text)",
    )


@check(
    "G08.stream_error_before_start",
    "An invalid streaming request gets a real HTTP 4xx before any SSE body",
    severity="SHOULD",
    faults=("stream_error_in_band",),
    source=f"{REFERENCE} G08; vLLM test_admission_rejection_escapes_before_response_starts",
)
def stream_error_before_start(ctx: ApiContext) -> None:
    stream = ctx.chat_stream(max_tokens=0)
    if stream.status == 200:
        fail(
            "streamed chat with max_tokens=0",
            desc("HTTP 400 before the stream"),
            desc(f"HTTP 200 and a stream: {stream.body[:160]!r}"),
        )
    rejected(stream.as_reply(), "streamed chat with max_tokens=0")


@check(
    "H01.stream_usage_absent_by_default",
    "Without stream_options no chunk carries usage",
    severity="SHOULD",
    faults=("stream_usage_always",),
    source=f"{REFERENCE} H01; vLLM test_usage_policy",
)
def stream_usage_absent_by_default(ctx: ApiContext) -> None:
    stream = ok_stream(ctx.chat_stream(max_tokens=4), "streamed chat without stream_options")
    expect_eq(len(stream.usage_chunks()), 0, "chunks with non-null usage without include_usage")


@check(
    "H02.stream_usage_final_chunk",
    "include_usage gives exactly one usage chunk, with choices [], after "
    "the last finish_reason and right before [DONE], with consistent usage",
    severity="MUST",
    faults=("no_stream_usage", "duplicate_usage_chunk", "usage_on_finish_chunk", "stream_usage_always"),
    source=f"{REFERENCE} H02; [sglang #3743](https://github.com/sgl-project/sglang/issues/3743); "
    "[openai-openapi PR #240](https://github.com/openai/openai-openapi/pull/240)",
)
def stream_usage_final_chunk(ctx: ApiContext) -> None:
    for what, _, stream in _streams(ctx):
        ok_stream(stream, f"streamed {what}")
        with_usage = stream.usage_chunks()
        expect_eq(len(with_usage), 1, f"streamed {what} with include_usage: chunks with non-null usage")
        chunk = with_usage[0]
        expect_eq(chunk.get("choices"), [], f"streamed {what} usage chunk 'choices'")
        expect(
            stream.chunks[-1] is chunk,
            f"streamed {what} usage chunk position",
            desc("the last chunk before [DONE]"),
            desc(f"chunk {stream.chunks.index(chunk) + 1} of {len(stream.chunks)}"),
        )
        consistent_usage(usage_of(chunk, f"streamed {what} usage chunk"), f"streamed {what}")


@check(
    "H03.stream_usage_equals_nonstream",
    "The streamed usage equals the non-streamed usage of the same greedy request",
    severity="MUST",
    greedy_retries=2,
    faults=("stream_usage_off_by_one",),
    source=f"{REFERENCE} H03",
)
def stream_usage_equals_nonstream(ctx: ApiContext) -> None:
    pairs = (
        ("chat", r1_body(ctx), r1_stream(ctx)),
        ("completions", completion_reference(ctx), completion_stream(ctx)),
    )
    for what, body, stream in pairs:
        ok_stream(stream, f"streamed {what}")
        usage = usage_of(body, what)
        chunks = stream.usage_chunks()
        expect(len(chunks) >= 1, f"streamed {what} with include_usage", desc("a usage chunk"), 0)
        streamed = usage_of(chunks[-1], f"streamed {what}")
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            expect_eq(streamed[key], usage[key], f"streamed {what} usage.{key} (the non-streamed usage)")


@check(
    "H04.stream_usage_n_gt_1",
    "Streamed n=2 with include_usage: one usage chunk, the prompt counted once, "
    "completion summed over the choices",
    severity="MUST",
    requires=("n",),
    faults=("usage_prompt_counted_per_choice", "n_ignored"),
    source=f"{REFERENCE} H04; LMDeploy test_handler_n3_stream",
)
def stream_usage_n_gt_1(ctx: ApiContext) -> None:
    single = usage_of(r1_body(ctx), "chat n=1")
    stream = ok_stream(
        ctx.chat_stream(max_tokens=6, n=2, temperature=0.7, stream_options={"include_usage": True}),
        "streamed chat n=2",
    )
    chunks = stream.usage_chunks()
    expect_eq(len(chunks), 1, "streamed chat n=2: chunks with usage")
    usage = usage_of(chunks[0], "streamed chat n=2")
    expect_eq(usage["prompt_tokens"], single["prompt_tokens"], "streamed n=2 usage.prompt_tokens (as n=1)")
    reasons = sorted(r for c in stream.choices().values() for r in c.finish_reasons)
    expect_eq(reasons, ["length", "length"], "streamed n=2 finish reasons with max_tokens=6")
    expect_eq(usage["completion_tokens"], 12, "streamed n=2 usage.completion_tokens (2 choices x 6 tokens)")


UTF8_COMPLETION_PROMPT = "以下是一首关于春天的中文短诗，每行后面有一个表情符号：\n"
UTF8_CHAT_PROMPT = "用中文写一句关于春天的话，并在句末加一个表情符号 🌸。"
REPLACEMENT = "\ufffd"


def _without_cut_character(text: str, finish_reason: Any) -> str:
    """A generation cut by max_tokens may end inside a multi-byte character: ignore a trailing U+FFFD then."""
    return text.rstrip(REPLACEMENT) if finish_reason == "length" else text


@check(
    "G07.stream_utf8_integrity",
    "Streamed multi-byte (CJK, emoji) output has no U+FFFD in any delta and joins to the non-streamed text",
    severity="SHOULD",
    greedy_retries=2,
    faults=("stream_splits_multibyte",),
    source=f"{REFERENCE} G07; [vmlx-swift PR #148](https://github.com/osaurus-ai/vmlx-swift/pull/148)",
)
def stream_utf8_integrity(ctx: ApiContext) -> None:
    if ctx.task_only_model:
        skip(
            "the served model is the fixture model, which writes only its tasks' ASCII text; multi-byte output "
            "needs a real model"
        )
    body = ok_json(ctx.completion(UTF8_COMPLETION_PROMPT, max_tokens=16), "completion of a Chinese prompt")
    reason = choice0(body, "completion").get("finish_reason")
    text = _without_cut_character(text_of(body), reason)
    if text.isascii():
        skip(f"the model answered the Chinese prompt in ASCII ({text[:40]!r}): no multi-byte output to check")
    stream = ok_stream(
        ctx.completion_stream(UTF8_COMPLETION_PROMPT, max_tokens=16), "streamed completion of a Chinese prompt"
    )
    pieces = [piece for _, piece in (stream.choices().get(0) or _empty_choice()).sequence]
    _check_pieces(pieces, text, reason, "streamed completion of a Chinese prompt")
    message = message_of(ok_json(ctx.chat(UTF8_CHAT_PROMPT, max_tokens=16), "chat in Chinese"), "chat in Chinese")
    chat_stream = ok_stream(ctx.chat_stream(UTF8_CHAT_PROMPT, max_tokens=16), "streamed chat in Chinese")
    choice = chat_stream.choices().get(0) or _empty_choice()
    reason = choice.finish_reasons[-1] if choice.finish_reasons else None
    for key in ("content", ctx.behaviour.reasoning_field):
        pieces = [piece for kind, piece in choice.sequence if kind == key]
        _check_pieces(pieces, str(message.get(key) or ""), reason, f"streamed chat in Chinese, '{key}' deltas")


def _empty_choice() -> ChoiceStream:
    return ChoiceStream(index=0)


def _check_pieces(pieces: list[str], expected: str, finish_reason: Any, what: str) -> None:
    joined = _without_cut_character("".join(pieces), finish_reason)
    broken = [p for p in pieces[:-1] if REPLACEMENT in p] + [
        p for p in pieces[-1:] if REPLACEMENT in _without_cut_character(p, finish_reason)
    ]
    expect(not broken, f"{what}", desc("no U+FFFD replacement character in any delta"), broken[:3])
    expect_eq(joined.strip(), expected.strip(), f"{what} joined (the non-streamed text)")


DISCONNECT_STREAMS = 8
DISCONNECT_GRACE_S = 3.0


@check(
    "G10.stream_client_disconnect_aborts",
    f"{DISCONNECT_STREAMS} long streams closed by the client after 3 events stop generating: the engine's "
    f"running-request gauge (or its token counter) settles within {DISCONNECT_GRACE_S:g} s",
    severity="SHOULD",
    faults=("disconnect_not_aborted",),
    source=f"{REFERENCE} G10; vLLM test_request_cancellation",
)
def stream_client_disconnect_aborts(ctx: ApiContext) -> None:
    streams = max(2, min(DISCONNECT_STREAMS, ctx.concurrency))
    before = running_gauge(ctx)
    body = ctx.chat_body(stream=True, **long_generation(ctx))
    results = parallel(
        [partial(abandon_stream, ctx, body, 3, ctx.api.request_timeout_s) for _ in range(streams)], streams
    )
    failed = [r.status for r in results if r.status != 200]
    expect(not failed, f"{streams} long streams", desc("HTTP 200"), failed)
    if all(r.finished for r in results):
        skip("every stream ended within 3 events: nothing was left to abort")
    what = f"{streams} clients closed their streams"
    release = wait_for_release(ctx, before[1] if before else None, DISCONNECT_GRACE_S, what)
    if release.released is None:
        reply = ctx.api.post("/v1/chat/completions", ctx.chat_body(max_tokens=4), timeout_s=5.0)
        expect(
            reply.status == 200, f"a small request after {what}", desc("HTTP 200 within 5 s"), desc(reply.describe())
        )
        return
    expect(bool(release.released), f"the engine after {what}", desc("no more work for them"), release.detail)
