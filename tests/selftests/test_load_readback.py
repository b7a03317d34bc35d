"""The read-back fast path (templates, whole reads in bulk) gives exactly what reading every event with orjson
gives: a frozen copy of the full per-event reading is the oracle, over generated streams cut at random."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_dsbench.load.http import Response
from pytest_dsbench.load.readback import Parsed, parse_stream

# -- the oracle: the full per-event reading, as it was before the fast path (do not optimise)
# ---------------------------------------------------------------------------------------------------------


def _data(block: bytes) -> bytes | None:
    if block.startswith(b"data: ") and b"\n" not in block:
        return block[6:]
    lines = [line for line in block.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[6:] if line[5:6] == b" " else line[5:] for line in lines)


def _events(pieces: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    out: list[tuple[float, bytes]] = []
    buf = b""
    for t, data in pieces:
        buf = buf + data if buf else data
        if b"\r" in buf:
            tail = b"\r" if buf.endswith(b"\r") else b""
            body = buf[:-1] if tail else buf
            buf = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        start = 0
        while (end := buf.find(b"\n\n", start)) >= 0:
            if (payload := _data(buf[start:end])) is not None:
                out.append((t, payload))
            start = end + 2
        buf = buf[start:]
    if buf.strip() and pieces and (payload := _data(buf.strip(b"\n"))) is not None:
        out.append((pieces[-1][0], payload))
    return out


def _answer_started(content: str) -> bool:
    if "</think>" in content:
        return bool(content.rsplit("</think>", 1)[1].strip())
    return "<think>" not in content and bool(content.strip())


def oracle(resp: Response, *, chat: bool) -> Parsed:
    out = Parsed(end_s=resp.end_s)
    reasoning_parts: list[str] = []
    content_parts: list[str] = []
    answer_s: float | None = None
    content = ""
    for t, data in _events(resp.pieces):
        if data == b"[DONE]":
            out.done = True
            out.events += 1
            out.end_s = t
            continue
        try:
            obj = orjson.loads(data)
        except ValueError:
            out.error = f"stream event is not JSON: {data[:120]!r}"
            return out
        out.events += 1
        out.end_s = t
        if type(obj) is not dict:
            continue
        choices = obj.get("choices")
        if "error" in obj and not choices:
            err = obj.get("error", obj)
            text = str(err.get("message") or err)[:300] if isinstance(err, dict) else str(err)[:300]
            out.error = f"error event in stream: {text}"
            return out
        usage = obj.get("usage")
        if usage and type(usage) is dict:
            if isinstance(usage.get("completion_tokens"), int):
                out.usage_completion_tokens = usage["completion_tokens"]
            if isinstance(usage.get("prompt_tokens"), int):
                out.usage_prompt_tokens = usage["prompt_tokens"]
        if not choices or type(choices) is not list:
            continue
        first = choices[0] or {}
        if chat:
            delta = first.get("delta") or {}
            piece = delta.get("content") or ""
            thought = delta.get("reasoning_content") or delta.get("reasoning") or ""
        else:
            piece = first.get("text") or ""
            thought = ""
        if not piece and not thought:
            continue
        out.chunk_s.append(t)
        if thought:
            reasoning_parts.append(thought)
        if piece:
            content_parts.append(piece)
            if answer_s is None:
                content += piece
                if _answer_started(content):
                    answer_s = t
    out.answer_s = answer_s
    out.text = "".join(reasoning_parts) + "".join(content_parts)
    return out


# -- generated streams
# ---------------------------------------------------------------------------------------------------------
HOLE = "\x00HOLE\x00"
"""Stands for the variable string in an envelope; replaced by raw bytes (valid or not) after serialising."""

texts = st.one_of(
    st.sampled_from(["tok ", " the", "a", "", " ", "\n", "<think>", "</think>", "é", "日本", '"', "\\", "\t"]),
    st.text(max_size=6),
)
plain_texts = st.one_of(
    st.sampled_from([b"tok ", b" x", b"", b" ", b"\x7f", b"\xc3\xa9", b"\xe6\x97\xa5", b"</think>", b"<think>", b"ok"]),
    st.text(st.characters(min_codepoint=0x20, exclude_characters='"\\', exclude_categories=["Cs"]), max_size=4).map(
        str.encode
    ),
)
traps = st.one_of(
    st.sampled_from([b'"', b"\\", b"\\n", b"\n", b"\r", b"\x01", b"\xc3", b"\xa9", b"\xed\xa0\x80", b'a","text":"b']),
    st.sampled_from([b"\n\ndata: x", b'","x":"', b"\\u00e9"]),
    st.binary(max_size=5),
)


@st.composite
def envelopes(draw: st.DrawFn, chat: bool) -> dict[str, Any]:
    """An event object with HOLE where the streamed string goes (possibly several fields, extra keys)."""
    first: dict[str, Any] = {"index": 0}
    if chat:
        delta: dict[str, Any] = {}
        for key in draw(st.lists(st.sampled_from(["role", "content", "reasoning_content", "reasoning"]), unique=True)):
            delta[key] = draw(st.sampled_from([HOLE, None, "", "x", "assistant"]))
        first["delta"] = delta
    else:
        first["text"] = draw(st.sampled_from([HOLE, HOLE, HOLE, HOLE, "", None, "x"]))
    first["finish_reason"] = draw(st.sampled_from([None, None, "length"]))
    obj: dict[str, Any] = {"id": draw(st.sampled_from(["cmpl-1"] * 8 + ["x", "text"])), "object": "chunk"}
    choices = [[first]] * 6 + [[first, {"index": 1, "text": "z"}], [], None, "bad"]
    obj["choices"] = draw(st.sampled_from(choices))
    usages = [{}, {}, {"usage": None}, {"usage": {"prompt_tokens": 2, "completion_tokens": 3}}]
    obj.update(draw(st.sampled_from(usages)))
    if draw(st.integers(0, 9)) == 0:
        obj["error"] = {"message": "engine died"}
    if draw(st.integers(0, 9)) == 0:
        obj["meta"] = {"text": HOLE, "content": "c"}  # the key elsewhere, too
    return obj


def server_envelopes(chat: bool) -> st.SearchStrategy[dict[str, Any]]:
    """What vLLM / sglang / the fast test server stream: one choice, the string in its usual field."""
    if chat:
        deltas = [
            {"content": HOLE},
            {"role": "assistant", "content": HOLE},
            {"reasoning_content": HOLE, "content": None},
        ]
        deltas += [{"reasoning": HOLE}, {"content": HOLE, "reasoning_content": None}]
        firsts = [{"index": 0, "delta": d, "logprobs": None, "finish_reason": None} for d in deltas]
    else:
        firsts = [{"index": 0, "text": HOLE, "logprobs": None, "finish_reason": None, "stop_reason": None}]
    return st.builds(
        lambda first, usage: {
            "id": "cmpl-9f",
            "object": "chunk",
            "created": 1,
            "model": "m",
            "choices": [first],
            **usage,
        },
        st.sampled_from(firsts),
        st.sampled_from([{}, {"usage": None}]),
    )


@st.composite
def payloads(draw: st.DrawFn, envelope: dict[str, Any], trap_one_in: int) -> bytes:
    """One event's data: the envelope with each hole filled on its own, by JSON encoding or by raw bytes."""
    separators = (",", ":") if draw(st.integers(0, 3)) > 0 else (", ", ": ")
    if draw(st.integers(0, 5)) == 0:  # proper JSON strings (escapes and all)
        ascii_only = draw(st.booleans())
        parts = json.dumps(envelope, separators=separators, ensure_ascii=ascii_only).split(
            json.dumps(HOLE, ensure_ascii=ascii_only)[1:-1]
        )
        fills = [json.dumps(draw(texts), ensure_ascii=ascii_only)[1:-1] for _ in parts[1:]]
        return "".join(p + f for p, f in zip(parts, [*fills, ""], strict=True)).encode()
    raw = (
        json.dumps(envelope, separators=separators, ensure_ascii=False).encode().split(json.dumps(HOLE)[1:-1].encode())
    )
    fills_raw = []
    for _ in raw[1:]:
        trap = trap_one_in and draw(st.integers(1, trap_one_in)) == 1
        fills_raw.append(draw(traps) if trap else draw(plain_texts))
    return b"".join(p + f for p, f in zip(raw, [*fills_raw, b""], strict=True))


KINDS = ["run"] * 90 + ["mixed"] * 6 + ["done", "other", "junk"]


@st.composite
def streams(draw: st.DrawFn, clean: bool = False) -> tuple[bool, list[tuple[float, bytes]]]:
    """(chat, pieces): events of a few envelopes, some traps, cut into reads; ``clean``: long, few traps."""
    chat = draw(st.booleans())
    envs = draw(st.lists(server_envelopes(chat) if clean else envelopes(chat), min_size=1, max_size=3))
    trap_one_in = draw(st.sampled_from([0, 0, 0, 100, 10]))  # most streams are clean, as servers' are
    events: list[bytes] = []
    for _ in range(draw(st.integers(20, 50) if clean else st.integers(0, 60))):
        kind = "run" if clean else draw(st.sampled_from(KINDS))
        if kind == "done":
            events.append(b"data: [DONE]\n\n")
        elif kind == "other":
            events.append(draw(st.sampled_from([b": ping\n\n", b"data:{}\n\n", b"event: x\ndata: {}\n\n", b"\n\n"])))
        elif kind == "junk":
            events.append(b"data: " + draw(st.binary(max_size=8)) + b"\n\n")
        else:  # mostly runs of one envelope, as servers send them
            env = envs[0] if kind == "run" else draw(st.sampled_from(envs))
            events.append(b"data: " + draw(payloads(env, trap_one_in)) + b"\n\n")
    body = b"".join(events)
    if not clean and draw(st.integers(0, 9)) == 0:
        body = body.replace(b"\n\n", b"\r\n\r\n")
    if not clean and draw(st.integers(0, 19)) == 0:
        body += b"data: " + draw(st.binary(max_size=6))  # a last event without its blank line
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=12)))
    if clean or draw(st.booleans()):  # cut at event boundaries, as whole-chunk reads are
        ends = [i + 2 for i in range(len(body)) if body.startswith(b"\n\n", i)]
        cuts = sorted(set(cuts[:2] + draw(st.lists(st.sampled_from(ends or [0]), max_size=12))))
    pieces, start = [], 0
    for n, cut in enumerate([*cuts, len(body)]):
        if cut > start:
            pieces.append((float(n + 1), body[start:cut]))
            start = cut
    return chat, pieces


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams())
def test_the_fast_read_back_equals_reading_every_event_with_orjson(
    case: tuple[bool, list[tuple[float, bytes]]],
) -> None:
    chat, pieces = case
    resp = Response(status=200, pieces=pieces, end_s=99.0)
    assert parse_stream(resp, chat=chat) == oracle(resp, chat=chat)
    shifted = Response(status=200, pieces=[(t - 0.5, data) for t, data in pieces], end_s=98.5)
    assert parse_stream(resp, chat=chat, origin=0.5) == oracle(shifted, chat=chat)  # times from an origin


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(streams(clean=True))
def test_long_streams_of_one_envelope_read_in_bulk_equal_the_full_reading(
    case: tuple[bool, list[tuple[float, bytes]]],
) -> None:
    chat, pieces = case
    resp = Response(status=200, pieces=pieces, end_s=99.0)
    assert parse_stream(resp, chat=chat) == oracle(resp, chat=chat)


# -- the cases the fast path is built for, and its traps
# ---------------------------------------------------------------------------------------------------------
def _event(text: str, finish: str | None = None) -> bytes:
    obj = {"id": "cmpl-1", "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def _check(pieces: list[tuple[float, bytes]], chat: bool = False) -> Parsed:
    resp = Response(status=200, pieces=pieces, end_s=9.0)
    parsed = parse_stream(resp, chat=chat)
    assert parsed == oracle(resp, chat=chat)
    return parsed


def test_whole_reads_of_one_envelope_are_read_in_bulk_with_their_read_times() -> None:
    reads = [(1.0, _event("r1 ") + _event("tok ")), (2.0, _event("tok ") * 5 + _event("")), (3.0, _event("日本"))]
    reads.append((4.0, _event("", "length") + b"data: [DONE]\n\n"))
    parsed = _check(reads)
    assert parsed.chunk_s == [1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 3.0] and parsed.events == 11
    assert parsed.text == "r1 " + "tok " * 6 + "日本" and parsed.answer_s == 1.0 and parsed.done


def test_a_raw_quote_or_control_byte_in_a_template_event_is_not_json() -> None:
    good = _event("tok ")
    for bad in (b'"', b"\n", b"\x01", b"\xff", b"\\"):
        parsed = _check([(1.0, good * 3), (2.0, good.replace(b"tok ", b"to" + bad) + good)])
        assert "not JSON" in parsed.error or parsed.text.endswith("\n") or "\\" in parsed.text or bad == b"\n"


def test_utf8_split_over_two_events_is_not_json_even_in_bulk() -> None:
    halves = _event("X").replace(b"X", b"\xc3") + _event("X").replace(b"X", b"\xa9")  # "é" cut in two
    parsed = _check([(1.0, _event("a") * 2), (2.0, halves + _event("b"))])
    assert "not JSON" in parsed.error


def test_a_reasoning_template_keeps_its_sibling_fields_meaning() -> None:
    def chat(text: str) -> bytes:
        delta = {"reasoning_content": text, "reasoning": "r"}  # the sibling speaks when the string is empty
        obj = {"choices": [{"index": 0, "delta": delta}]}
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    parsed = _check([(1.0, chat("a") * 3), (2.0, chat("") + chat("b"))], chat=True)
    assert parsed.text == "aaarb" and parsed.chunk_s == [1.0, 1.0, 1.0, 2.0, 2.0]


def test_a_carriage_return_anywhere_switches_to_the_general_splitter() -> None:
    cr = _event("X").replace(b"X", b"\r")  # a raw CR in a string: the general splitter makes it a line end
    parsed = _check([(1.0, _event("a") * 3), (2.0, _event("b") + cr)])
    assert "not JSON" in parsed.error
    assert _check([(1.0, _event("a") + b"data: [DONE]\r\n\r\n")]).done


def test_an_event_where_the_templates_head_and_tail_overlap_is_not_json() -> None:
    def ev(text: str) -> bytes:
        return b'data: {"choices":[{"text":"' + text.encode() + b'"}]}\n\n'

    overlap = b'data: {"choices":[{"text":"}]}\n\n'  # starts with the head, ends with the tail, shares a quote
    assert "not JSON" in _check([(1.0, ev("a") + ev("b") + overlap + ev("c"))]).error
    assert "not JSON" in _check([(1.0, ev("a")), (2.0, overlap)]).error


def test_escaped_strings_between_template_events_keep_their_order_and_times() -> None:
    reads = [(1.0, _event("a") + _event("x\ny") + _event("b")), (2.0, (_event("c") + _event('q"')) * 20)]
    parsed = _check(reads)
    assert parsed.text == "ax\nyb" + 'cq"' * 20 and parsed.chunk_s == [1.0] * 3 + [2.0] * 40


def test_the_same_key_twice_with_equal_values_never_makes_a_template() -> None:
    twice = b'data: {"choices":[{"text":"a","text":"a"}]}\n\n'
    assert _check([(1.0, twice * 2 + twice.replace(b'"a","', b'"b","'))]).text == "aaa"


def test_chat_reasoning_then_content_switches_templates() -> None:
    def chat(**delta: Any) -> bytes:
        obj = {"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": None}], "usage": None}
        return b"data: " + json.dumps(obj).encode() + b"\n\n"

    reads = [(1.0, chat(role="assistant", content="")), (2.0, chat(reasoning_content="hm", content=None) * 4)]
    reads += [(3.0, chat(content="</think>") + chat(content="\n")), (4.0, chat(content="42") * 3)]
    parsed = _check(reads, chat=True)
    assert parsed.text.startswith("hmhmhmhm</think>") and parsed.answer_s == 4.0


def test_duplicate_or_nested_keys_never_make_a_template() -> None:
    dup = b'data: {"choices":[{"text":"a","text":"b"}]}\n\n'
    nested = b'data: {"x":{"text":"q"},"choices":[{"text":"a"}]}\n\n'
    assert _check([(1.0, dup * 3)]).text == "bbb"
    assert _check([(1.0, nested * 2 + nested.replace(b'"a"', b'"c"'))]).text == "aac"
