"""The one error type of accuracy runs: a one-line message that says what is wrong and how to fix it."""

from __future__ import annotations


class AccuracyError(Exception):
    """An accuracy run could not produce a score (no EvalScope, no data, an EvalScope or engine failure).

    The conformance test turns it into a failure with this message and no traceback.
    """
