"""Every API conformance check passes against the compliant fake engine and FAILS against each fault that
violates it, with a message that says what was expected and what the server did.

This is the proof that no check in the catalogue can silently pass a broken server.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from pytest_dsbench.conformance import CheckFailed, all_checks
from pytest_dsbench.conformance.catalog import Check
from pytest_dsbench.conformance.context import ApiContext
from pytest_dsbench.conformance.selftest import (
    SELFTEST_TIMEOUT_S,
    fake_check_context,
    fake_config,
    fake_context,
)
from pytest_dsbench.testing.fake_engine import FakeEngineThread

CHECKS = all_checks()
CHECK_FAULTS = [pytest.param(c, f, id=f"{c.id}-{f}") for c in CHECKS for f in c.faults]


@pytest.fixture(scope="module")
def compliant() -> Iterator[ApiContext]:
    """One compliant fake engine shared by the pass tests (its responses are memoised like a real session)."""
    with (
        FakeEngineThread(fake_config()) as engine,
        httpx.Client(base_url=engine.base_url, timeout=SELFTEST_TIMEOUT_S) as client,
    ):
        yield fake_context(engine, client=client)


@pytest.mark.parametrize("item", CHECKS, ids=str)
def test_check_passes_against_the_compliant_fake(item: Check, compliant: ApiContext) -> None:
    item.func(compliant)


@pytest.mark.parametrize(("item", "fault"), CHECK_FAULTS)
def test_check_fails_against_its_fault_naming_expected_and_actual(item: Check, fault: str) -> None:
    with fake_check_context((fault,)) as ctx, pytest.raises(CheckFailed) as failure:
        item.func(ctx)
    message = str(failure.value)
    assert "expected " in message and ", got " in message, message


def _echo_ignored() -> object:
    from dataclasses import replace

    from pytest_dsbench.conformance.selftest import SELFTEST_BEHAVIOUR

    return replace(SELFTEST_BEHAVIOUR, echo_honoured=False)


def test_concurrent_load_without_echo_checks_completions_against_the_prompt_asked_alone() -> None:
    from pytest_dsbench.conformance import catalog

    with fake_check_context(behaviour=_echo_ignored()) as ctx:  # type: ignore[arg-type]
        catalog.get("P01.concurrent_mixed_load").func(ctx)


def test_concurrent_load_without_echo_still_catches_cross_talk() -> None:
    from pytest_dsbench.conformance import catalog

    with fake_check_context(("cross_talk",), behaviour=_echo_ignored()) as ctx, pytest.raises(  # type: ignore[arg-type]
        CheckFailed, match="concurrent responses"
    ):
        catalog.get("P01.concurrent_mixed_load").func(ctx)


TOOL_CHECKS = [c for c in CHECKS if c.group == "M"]


@pytest.mark.parametrize("chunk_chars", [0, 1], ids=["arguments-in-one-delta", "one-character-per-delta"])
@pytest.mark.parametrize("item", TOOL_CHECKS, ids=str)
def test_tool_checks_pass_however_the_arguments_are_split_over_deltas(item: Check, chunk_chars: int) -> None:
    # SGLang streams a call's arguments in one delta, vLLM in pieces: both are valid streamed tool calls.
    with fake_check_context(tool_args_chunk_chars=chunk_chars) as ctx:
        item.func(ctx)
