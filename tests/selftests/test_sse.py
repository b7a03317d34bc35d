"""The suite's SSE parser: tolerant of any chunk boundaries, strict about OpenAI stream framing."""

from __future__ import annotations

import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_dsbench.sse import SSEParser, parse_events, parse_openai_stream

DONE = b"data: [DONE]\n\n"


def chunk(payload: dict[str, object]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_a_well_formed_openai_stream_has_no_problems() -> None:
    stream = parse_openai_stream([chunk({"choices": []}), chunk({"choices": [], "usage": {}}), DONE])
    assert stream.problems == []
    assert stream.done
    assert len(stream.chunks) == 2


def test_single_byte_pieces_split_utf8_characters_without_damage() -> None:
    body = chunk({"text": "世界 🙂 Grüße"}) + DONE
    stream = parse_openai_stream(split_every(body, 1))
    assert stream.problems == []
    assert stream.chunks[0]["text"] == "世界 🙂 Grüße"


def test_crlf_split_between_pieces_is_one_line_end() -> None:
    events, _ = parse_events([b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"])
    assert [e.data for e in events] == ["a", "b"]


def test_missing_done_is_a_framing_problem() -> None:
    stream = parse_openai_stream([chunk({"choices": []})])
    assert stream.problems == ["stream has no final 'data: [DONE]' event"]


def test_an_event_field_is_a_framing_problem() -> None:
    stream = parse_openai_stream([b"event: message\ndata: {}\n\n", DONE])
    assert any("has an 'event:' field ('message')" in p for p in stream.problems)


def test_id_retry_and_unknown_fields_on_data_events_are_allowed_and_noted() -> None:
    stream = parse_openai_stream([b"id: 7\nretry: 1000\nx-trace: a\ndata: {}\n\n", DONE])
    assert stream.problems == []
    assert stream.notes == ["events carry id, retry, x-trace besides data (allowed by SSE, ignored)"]


def test_keep_alive_comments_between_events_dispatch_nothing() -> None:
    body = [b": ping\n\n", chunk({"choices": []}), b":\n\n: ping - 2026-12-07\n\n", DONE]
    stream = parse_openai_stream(body)
    assert stream.problems == []
    assert len(stream.events) == 2 and len(stream.chunks) == 1
    assert stream.notes[0].startswith("3 block(s) without data, not dispatched (e.g. : ping")


def test_a_block_with_only_an_id_dispatches_nothing() -> None:
    events, parser = parse_events([b"id: 3\n\ndata: x\n\n"])
    assert [e.data for e in events] == ["x"]
    assert [block.fields for block in parser.ignored] == [(("id", "3"),)]


def test_a_data_less_retry_block_is_a_problem_for_the_openai_sdk() -> None:
    stream = parse_openai_stream([b"retry: 3000\n\n", chunk({"choices": []}), DONE])
    assert stream.problems == [
        "1 block(s) without data that the openai SDK dispatches as an empty event and fails to parse as JSON "
        "(first: 'retry: 3000', its fields); send data-less blocks as comments only, and no id: when keep-alive "
        "comments are sent"
    ]


def test_keep_alives_after_an_id_are_a_problem_for_the_openai_sdk() -> None:
    stream = parse_openai_stream([b"id: 1\ndata: {}\n\n", b": ping\n\n", DONE])
    assert len(stream.problems) == 1
    assert "(first: ': ping', it comes after an id:, which the SDK never forgets)" in stream.problems[0]


def test_an_empty_id_resets_the_last_event_id() -> None:
    stream = parse_openai_stream([b"id: 1\ndata: {}\n\n", b"id:\ndata: {}\n\n", b": ping\n\n", DONE])
    assert stream.problems == []


def test_the_problems_match_what_the_openai_sdk_decoder_dispatches() -> None:
    from openai._streaming import SSEDecoder

    for body in (b": ping\n\n", b"retry: 5\n\n", b"id: 1\ndata: {}\n\n: ping\n\n", b"x-y: 1\n\n", b"id: 2\n\n"):
        decoder = SSEDecoder()
        dispatched = [e for line in body.decode().split("\n") if (e := decoder.decode(line)) is not None]
        empty_events = any(e.data == "" for e in dispatched)
        _, parser = parse_events([body])
        assert any(block.breaks_openai_sdk() for block in parser.ignored) is empty_events, body


def test_crlf_and_cr_line_ends_are_valid_and_noted() -> None:
    for newline in (b"\r\n", b"\r"):
        body = chunk({"choices": []}).replace(b"\n", newline) + DONE.replace(b"\n", newline)
        stream = parse_openai_stream([body])
        assert stream.problems == [] and stream.done
        assert stream.notes == [f"line ends {newline.decode()!r}"]


def test_a_comment_block_left_open_at_the_end_is_not_an_unterminated_event() -> None:
    _, parser = parse_events([b"data: x\n\n: ping\n"])
    assert parser.unterminated == ""
    assert len(parser.ignored) == 1


def test_anything_after_done_is_a_framing_problem() -> None:
    stream = parse_openai_stream([DONE, chunk({"choices": []})])
    assert any("after data: [DONE]" in p for p in stream.problems)


def test_a_body_that_ends_inside_an_event_is_reported() -> None:
    stream = parse_openai_stream([chunk({"choices": []}), b"data: [DONE]\n"])
    assert any("body ends inside an event" in p for p in stream.problems)
    assert not stream.done


def test_non_json_payload_is_reported_with_its_text() -> None:
    stream = parse_openai_stream([b"data: {oops\n\n", DONE])
    assert any("not JSON" in p and "{oops" in p for p in stream.problems)


def test_non_finite_numbers_are_not_json() -> None:
    stream = parse_openai_stream([b'data: {"logprob": -Infinity}\n\n', DONE])
    assert any("non-finite" in p for p in stream.problems)


def test_two_data_lines_in_one_event_are_reported() -> None:
    stream = parse_openai_stream([b"data: {}\ndata: {}\n\n", DONE])
    assert any("2 data lines" in p for p in stream.problems)


def test_invalid_utf8_is_reported_not_raised() -> None:
    parser = SSEParser()
    events = parser.feed(b"data: \xff\xfe\n\n") + parser.close()
    assert parser.problems and "invalid UTF-8" in parser.problems[0]
    assert len(events) == 1


def test_comments_are_kept_apart_from_data() -> None:
    events, _ = parse_events([b": keep-alive\ndata: x\n\n"])
    assert events[0].comments == (" keep-alive",)
    assert events[0].data == "x"


def test_leading_byte_order_mark_is_ignored() -> None:
    events, _ = parse_events([b"\xef\xbb", b"\xbfdata: x\n\n"])
    assert [e.data for e in events] == ["x"]


# -- the specification's own examples (WHATWG HTML, "Server-sent events", 9.2.5 and 9.2.6) -----------------
SPEC_EXAMPLES = {
    "two-line data": (
        "data: This is the first message.\n\ndata: This is the second message, it\ndata: has two lines.\n\n"
        "data: This is the third message.\n\n",
        ["This is the first message.", "This is the second message, it\nhas two lines.", "This is the third message."],
    ),
    "event types": (
        "event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n",
        ["73857293", "2153", "113411"],
    ),
    "comment, ids and one leading space": (
        ": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n",
        ["first event", "second event"],  # the last block is not followed by a blank line: not dispatched
    ),
    "empty data": ("data\n\ndata\ndata\n\ndata:", ["", "\n"]),
    "space after the colon is optional": ("data:test\n\ndata: test\n\n", ["test", "test"]),
}


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(sorted(SPEC_EXAMPLES)),
    newline=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(0, 400), max_size=6),
)
def test_the_specifications_examples_dispatch_the_events_it_names(name: str, newline: str, cuts: list[int]) -> None:
    text, expected = SPEC_EXAMPLES[name]
    body = text.replace("\n", newline).encode()
    events, parser = parse_events(_pieces(body, sorted(c for c in cuts if c <= len(body))))
    assert [e.data for e in events] == expected
    assert parser.problems == []


def test_the_last_block_without_a_blank_line_is_reported_as_unterminated() -> None:
    _, parser = parse_events([SPEC_EXAMPLES["comment, ids and one leading space"][0].encode()])
    assert parser.unterminated == "data:  third event"


# -- fuzzing -------------------------------------------------------------------------------------------------
_line = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=12
)
_event = st.lists(_line, min_size=1, max_size=3)


@st.composite
def _stream_and_cuts(draw: st.DrawFn) -> tuple[list[list[str]], bytes, list[int]]:
    events = draw(st.lists(_event, max_size=6))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    comments = draw(st.booleans())
    text = ""
    for lines in events:
        if comments:
            text += ": ping" + newline
        text += "".join(f"data: {line}{newline}" for line in lines) + newline
    body = text.encode("utf-8")
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=8)))
    return events, body, cuts


def _pieces(body: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *cuts, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=300, deadline=None)
@given(_stream_and_cuts())
def test_events_survive_any_chunk_boundaries_and_line_ends(
    case: tuple[list[list[str]], bytes, list[int]],
) -> None:
    events, body, cuts = case
    parsed, parser = parse_events(_pieces(body, cuts))
    assert [e.data for e in parsed] == ["\n".join(lines) for lines in events]
    assert parser.unterminated == ""
    assert parser.problems == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=6))
def test_arbitrary_bytes_never_raise_and_pieces_do_not_matter(body: bytes, cuts: list[int]) -> None:
    whole, whole_parser = parse_events([body])
    pieces = [c for c in sorted(cuts) if c <= len(body)]
    split, split_parser = parse_events(_pieces(body, pieces))
    assert [e.fields for e in split] == [e.fields for e in whole]
    assert split_parser.unterminated == whole_parser.unterminated
    parse_openai_stream(_pieces(body, pieces))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=8), max_size=3), max_size=5
    ),
    st.integers(1, 7),
)
def test_json_chunks_roundtrip_through_the_strict_reader(
    payloads: list[dict[str, object]], size: int
) -> None:
    body = b"".join(chunk(p) for p in payloads) + DONE
    stream = parse_openai_stream(split_every(body, size))
    assert stream.problems == []
    assert stream.chunks == payloads
