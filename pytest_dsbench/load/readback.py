"""Reading a finished streamed response back into text-chunk times, text, usage and errors.

The timing rules are sglang.bench_serving's (bench_tools.md 1.6 / (c)), applied to the arrival time of the
network read that completed each SSE event:

* TTFT starts at the first chunk whose ``choices[0].text`` (completions) or ``delta.content`` /
  ``delta.reasoning_content`` / ``delta.reasoning`` (chat) is non-empty; role-only and usage-only chunks never
  start it. Reasoning counts (sglang PR #23954), and the first *answer* chunk is kept separately (TTFAT).
* Every later chunk with text adds one ITL sample (per chunk, not per token).
* The end of a request is the last event received (``[DONE]`` included).
* ``usage.completion_tokens`` is kept when the server streams it; the output length falls back to the
  requested length, as sglang's does.

Why a fast path: at thousands of events per second the read-back was most of the client's CPU, and almost
every event of a stream is the previous one with another string in one field. Once an event has been read
in full (orjson) and holds its text in a plain string (no escapes), its bytes before and after that string
become a *template*. A later event that is the template's head, a string without quotes, backslashes or
control bytes, and the template's tail is the same JSON with only that string changed, so its text is taken
by slicing. The reads of a response are joined and runs of such events are cut, checked and timed with a few
C-level operations per event (no Python code runs per event). Anything else (a first event, usage,
errors, escapes, CR framing, comments) goes through the full per-event reading, so the result is identical
to reading every event with orjson (``tests/selftests/test_load_readback.py`` checks it against a frozen
copy of that reading).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from itertools import accumulate, compress
from operator import add, itemgetter
from typing import Any

import orjson

from pytest_dsbench.load.http import Response

_loads: Callable[[bytes], Any] = orjson.loads
"""Reads a chunk several times faster than :func:`json.loads`."""

MAX_RUN_ATTEMPTS = 64
"""Bulk attempts that find no run, per response, before the rest is read event by event."""
RUN_WINDOW_BYTES = 2048
"""The first window of a bulk attempt; each full one doubles the next."""
END_THINK = "</think>"
THINK = "<think>"
_NOT_PLAIN = bytes(range(0x20)) + b'"\\'
"""The bytes that cannot stand unescaped in a JSON string (or would end it): ``s.translate(None, _NOT_PLAIN)``
keeps ``s``'s length exactly when it has none (a C loop, faster than a regular expression here)."""


@dataclass
class Parsed:
    """A streamed response read back: text-chunk times, answer start, end, text, usage and any error."""

    chunk_s: list[float] = field(default_factory=list)
    answer_s: float | None = None
    end_s: float = 0.0
    text: str = ""
    events: int = 0
    usage_prompt_tokens: int | None = None
    usage_completion_tokens: int | None = None
    error: str = ""
    done: bool = False


def _data(block: bytes) -> bytes | None:
    """The ``data`` of one SSE event block (lines joined with ``\\n``), or None when it has none."""
    if block.startswith(b"data: ") and b"\n" not in block:  # the common case: one data line
        return block[6:]
    lines = [line for line in block.split(b"\n") if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[6:] if line[5:6] == b" " else line[5:] for line in lines)


def _events(pieces: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    """SSE ``data`` payloads with the arrival time of the read that completed each event (any framing)."""
    out: list[tuple[float, bytes]] = []
    buf = b""
    for t, data in pieces:
        buf = buf + data if buf else data
        if b"\r" in buf:
            tail = b"\r" if buf.endswith(b"\r") else b""  # may be the first half of a CRLF
            body = buf[:-1] if tail else buf
            buf = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + tail
        start = 0
        find = buf.find
        while (end := find(b"\n\n", start)) >= 0:
            if buf.startswith(b"data: ", start) and find(b"\n", start, end) < 0:
                out.append((t, buf[start + 6 : end]))  # the common case: one data line
            elif (payload := _data(buf[start:end])) is not None:
                out.append((t, payload))
            start = end + 2
        buf = buf[start:]
    if buf.strip() and pieces and (payload := _data(buf.strip(b"\n"))) is not None:
        out.append((pieces[-1][0], payload))
    return out


def _error_text(obj: dict[str, Any]) -> str:
    err = obj.get("error", obj)
    if isinstance(err, dict):
        return str(err.get("message") or err)[:300]
    return str(err)[:300]


def _answer_started(content: str) -> bool:
    """True once the streamed content holds answer text: after ``</think>``, or with no think block at all."""
    if END_THINK in content:
        return bool(content.rsplit(END_THINK, 1)[1].strip())
    return THINK not in content and bool(content.strip())


@dataclass(frozen=True)
class _Template:
    """An event read in full, cut around its one variable string: ``head + string + tail`` is its payload."""

    head: bytes
    tail: bytes
    answer: bool
    """The string is answer content (``text`` / ``delta.content``), else reasoning."""


class _Reader:
    """The state of one response being read: what :class:`Parsed` collects, plus the current template."""

    def __init__(self, chat: bool, end_s: float) -> None:
        self.chat = chat
        self.out = Parsed(end_s=end_s)
        self.reasoning: list[str] = []
        self.content: list[str] = []
        self.before_answer = ""  # the content so far, while the answer has not started
        self.answer_s: float | None = None
        self.template: _Template | None = None
        self._block_head = b""
        self._block_tail = b""
        self._sep = b""
        self._cut = itemgetter(slice(0))

    def result(self) -> Parsed:
        out = self.out
        out.answer_s = self.answer_s
        out.text = "".join(self.reasoning) + "".join(self.content)
        return out

    # -- text
    # -------------------------------------------------------------------------------------------------
    def _text(self, t: float, piece: str, thought: str) -> None:
        self.out.chunk_s.append(t)
        if thought:
            self.reasoning.append(thought)
        if piece:
            self.content.append(piece)
            if self.answer_s is None:
                self.before_answer += piece
                if _answer_started(self.before_answer):
                    self.answer_s = t

    # -- one event
    # --------------------------------------------------------------------------------------------
    def event(self, t: float, data: bytes) -> bool:
        """Read one event's ``data``; False when it ended the response with an error."""
        out = self.out
        tpl = self.template
        if tpl is not None and data.startswith(tpl.head) and data.endswith(tpl.tail):
            raw = data[len(tpl.head) : len(data) - len(tpl.tail)]
            if len(data) >= len(tpl.head) + len(tpl.tail) and len(raw.translate(None, _NOT_PLAIN)) == len(raw):
                try:
                    text = raw.decode()
                except UnicodeDecodeError:
                    pass  # not JSON: the full reading reports it
                else:
                    out.events += 1
                    out.end_s = t
                    if text and tpl.answer:
                        self._text(t, text, "")
                    elif text:
                        self._text(t, "", text)
                    return True
        if data == b"[DONE]":
            out.done = True
            out.events += 1
            out.end_s = t
            return True
        try:
            obj = _loads(data)
        except ValueError:
            out.error = f"stream event is not JSON: {data[:120]!r}"
            return False
        out.events += 1
        out.end_s = t
        if type(obj) is not dict:
            return True
        choices = obj.get("choices")
        if "error" in obj and not choices:
            out.error = f"error event in stream: {_error_text(obj)}"
            return False
        usage = obj.get("usage")
        if usage and type(usage) is dict:
            if isinstance(usage.get("completion_tokens"), int):
                out.usage_completion_tokens = usage["completion_tokens"]
            if isinstance(usage.get("prompt_tokens"), int):
                out.usage_prompt_tokens = usage["prompt_tokens"]
        if not choices or type(choices) is not list:
            return True
        first = choices[0] or {}
        if self.chat:
            delta = first.get("delta") or {}
            piece = delta.get("content") or ""
            thought = delta.get("reasoning_content") or delta.get("reasoning") or ""
        else:
            delta = first
            piece = first.get("text") or ""
            thought = ""
        if not piece and not thought:
            return True
        self._text(t, piece, thought)
        if not usage and bool(piece) != bool(thought):
            self._learn(data, delta, piece, thought)
        return True

    def _learn(self, data: bytes, fields: dict[str, Any], piece: str, thought: str) -> None:
        """Make this event the template when its one text string can be cut out of its bytes exactly.

        The variable string must be the only one of its key in the event (so the key's bytes are that
        field), unescaped (no backslash anywhere), and its siblings must not supply text when it is empty.
        """
        if self.chat:
            if piece:
                key = "content"
            elif fields.get("reasoning_content"):
                key = "reasoning_content"
            else:
                key = "reasoning"
            if key != "content" and fields.get("content"):
                return
            if key == "reasoning_content" and fields.get("reasoning"):
                return
        else:
            key = "text"
        value = fields.get(key)
        if type(value) is not str or b"\\" in data or b"\n" in data or b"\r" in data:
            return
        token = b'"' + key.encode() + b'"'
        if data.count(token) != 1:
            return
        start = data.find(token + b':"')
        if start < 0:
            return
        start += len(token) + 2
        raw = value.encode()
        end = start + len(raw)
        if data[start:end] != raw or data[end : end + 1] != b'"':
            return
        self.template = _Template(data[:start], data[end:], answer=bool(piece))
        self._block_head = b"data: " + data[:start]
        self._block_tail = data[end:] + b"\n\n"
        self._sep = self._block_tail + self._block_head
        self._cut = itemgetter(slice(len(self._block_head), -len(self.template.tail)))

    # -- runs of template events
    # ------------------------------------------------------------------------------
    def _run_length(self, events: list[bytes], texts: list[bytes]) -> int:
        """How many of ``events`` from the first are the template's with a plain string (``texts``: theirs)."""
        head = self._block_head
        tail = self.template.tail if self.template is not None else b""
        for i, (event, text) in enumerate(zip(events, texts, strict=True)):
            if (
                len(event) != len(head) + len(text) + len(tail)
                or not event.startswith(head)
                or not event.endswith(tail)
                or len(text.translate(None, _NOT_PLAIN)) != len(text)
            ):
                return i
        return len(events)

    def run(self, body: bytes, pos: int, times: list[float], read_at: Callable[[int], int]) -> int:
        """Read the template events that start at ``body[pos]``, in bulk; returns where they end (``pos``: none).

        The body is taken in windows that double (so a run cut short by a foreign event costs about what it
        read) and that stop before the next backslash (an escape: the full reading's business).
        """
        head, tail = self._block_head, self._block_tail
        budget = RUN_WINDOW_BYTES
        while self.template is not None and body.startswith(head, pos):
            limit = min(len(body), pos + budget)
            escape = body.find(b"\\", pos, limit)
            last = body.rfind(tail, pos + len(head), limit if escape < 0 else escape)
            if last < 0:
                break
            end = self._take(body, pos, last + len(tail), times, read_at)
            if end != last + len(tail) or escape >= 0:
                return end
            pos = end
            budget *= 2
        return pos

    def _take(self, body: bytes, pos: int, stop: int, times: list[float], read_at: Callable[[int], int]) -> int:
        """Read ``body[pos:stop]`` as template events, as far as they are; returns where they end.

        They are ``head + s1 + sep + s2 + ... + sk + tail`` with plain strings ``s`` (no quote, backslash or
        control byte, hence no line break), so their SSE events are exactly k template events: they are cut
        at the blank lines and checked by rebuilding the bytes. Each event gets the time of the read holding
        its blank line's last byte, found by bisection over the read ends (``read_at``), as :func:`_events`
        gives it.
        """
        head, tail = self._block_head, self._block_tail
        events = body[pos : stop - 2].split(b"\n\n")  # (a short separator: a fast search)
        texts = list(map(self._cut, events))
        joined = b"".join(texts)
        if (
            len(joined.translate(None, _NOT_PLAIN)) != len(joined)
            or head + self._sep.join(texts) + tail != body[pos:stop]
        ):  # a foreign event: the run stops before it
            count = self._run_length(events, texts)
            if not count:
                return pos
            del events[count:], texts[count:]
            joined = b"".join(texts)
        if joined.isascii():
            strings = None
            text = joined.decode("ascii")
        else:
            try:  # each string must be UTF-8 on its own, as each event must
                strings = [s.decode() for s in texts]
            except UnicodeDecodeError:
                return pos
            text = "".join(strings)
        count = len(texts)
        # the offset of each event's last byte (its blank line's second line feed), then the read holding it
        lasts = map(add, accumulate(map(len, events)), range(pos + 1, pos + 1 + 2 * count, 2))
        reads = list(map(read_at, lasts))
        out = self.out
        out.events += count
        out.end_s = times[reads[-1]]
        out.chunk_s += map(times.__getitem__, compress(reads, texts))  # the events with text
        end = pos + sum(map(len, events)) + 2 * count
        if not joined or self.template is None:
            return end
        if not self.template.answer:
            self.reasoning.append(text)
            return end
        self.content.append(text)
        if self.answer_s is None:
            for i, s in enumerate(strings if strings is not None else (s.decode("ascii") for s in texts)):
                if s:
                    self.before_answer += s
                    if _answer_started(self.before_answer):
                        self.answer_s = times[reads[i]]
                        break
        return end


def parse_stream(resp: Response, *, chat: bool, origin: float = 0.0) -> Parsed:
    """Read a finished streamed response back (never raises: problems become ``Parsed.error``).

    ``origin`` is subtracted from every time in the result (once per read, not per event).
    """
    pieces = [(t - origin, data) for t, data in resp.pieces] if origin else resp.pieces
    end_s = resp.end_s - origin
    reader = _Reader(chat, end_s)
    out = reader.out
    if resp.error:
        out.error = resp.error
        return out
    if resp.status != 200:
        body = b"".join(p for _, p in pieces)[:300].decode("utf-8", errors="replace")
        out.error = f"HTTP {resp.status}: {body}"
        return out
    parsed = _read_lf(reader, pieces)
    if parsed is not None:
        return parsed
    reader = _Reader(chat, end_s)  # a carriage return: start again with the general event splitter
    for t, data in _events(pieces):
        if not reader.event(t, data):
            return reader.out
    return reader.result()


def _read_lf(reader: _Reader, pieces: list[tuple[float, bytes]]) -> Parsed | None:
    """Read a stream framed with ``\\n`` only, runs of template events in bulk; None at a ``\\r``.

    The whole body is read at once; an event gets the time of the read that holds its blank line's last
    byte. That is :func:`_events`'s rule: it finds the same events (leftmost blank lines, in order), each
    as soon as the read that completes it is added.
    """
    datas = [data for _, data in pieces]
    body = b"".join(datas)
    if b"\r" in body:
        return None
    times = [t for t, _ in pieces]
    read_at = partial(bisect_right, list(accumulate(map(len, datas))))
    find = body.find
    pos = 0
    attempts = MAX_RUN_ATTEMPTS
    while (end := find(b"\n\n", pos)) >= 0:
        payload = _data(body[pos:end])
        if payload is not None and not reader.event(times[read_at(end + 1)], payload):
            return reader.out
        pos = end + 2
        if attempts and reader.template is not None:  # after the first event, or a foreign one (an escape...)
            start, pos = pos, reader.run(body, pos, times, read_at)
            attempts -= pos == start
    tail = _data(body[pos:].strip(b"\n")) if body[pos:].strip() else None
    if tail is not None and not reader.event(times[-1], tail):
        return reader.out
    return reader.result()
