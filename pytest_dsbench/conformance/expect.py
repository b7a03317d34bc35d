"""How a conformance check says what went wrong: always "what: expected X, got Y".

Checks raise :class:`CheckFailed` (an ``AssertionError``, so pytest reports it as a failure) through the
helpers here, which keep the message format uniform and the quoted values short. :class:`CheckSkipped` means
the check does not apply to this engine or deployment; the reason says why.
"""

from __future__ import annotations

from typing import Any, NoReturn

MAX_REPR = 240


class CheckFailed(AssertionError):
    """The server violated a check; the message names the expected and the actual behaviour."""


class CheckSkipped(Exception):
    """The check does not apply here (engine profile, deployment, missing tokenizer); the message says why."""


def show(value: Any) -> str:
    """A short repr for messages (long values are cut in the middle)."""
    text = value if isinstance(value, str) and value.startswith("<") and value.endswith(">") else repr(value)
    if len(text) > MAX_REPR:
        half = MAX_REPR // 2 - 3
        text = f"{text[:half]} ... {text[-half:]}"
    return text


def fail(what: str, expected: Any, got: Any) -> NoReturn:
    """Raise ``CheckFailed("what: expected X, got Y")``; pass ``"<text>"`` to print text without quotes."""
    raise CheckFailed(f"{what}: expected {show(expected)}, got {show(got)}")


def expect_eq(got: Any, expected: Any, what: str) -> None:
    if got != expected:
        fail(what, expected, got)


def expect(condition: bool, what: str, expected: Any, got: Any) -> None:
    if not condition:
        fail(what, expected, got)


def skip(reason: str) -> NoReturn:
    raise CheckSkipped(reason)


def desc(text: str) -> str:
    """Mark a description so :func:`show` prints it without quotes: ``fail(w, desc("a 4xx status"), 500)``."""
    return f"<{text}>"
