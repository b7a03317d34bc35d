"""The engine serving the fixture model reproduces transformers' greedy reference outputs.

``fixtures/tiny-r1/reference.jsonl`` holds, for every task prompt, transformers' greedy completion of the
committed weights with its top-5 logprobs. An engine that loads the checkpoint correctly (MLA, group-limited
``noaux_tc`` routing with its correction bias, shared expert, ``routed_scaling_factor``) must produce the same
tokens and logprobs within the tolerance documented in :mod:`pytest_dsbench.reference_outputs`. The checks
skip when the engine serves another model, for which no reference exists.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.reference_outputs import (
    DEFAULT_TOLERANCE,
    EngineCompletion,
    ReferenceRow,
    compare_logprobs,
    compare_tokens,
    completions_from_response,
    completions_request,
    finish_reason_problems,
    load_reference,
    load_token_lengths,
    prompt_token_mismatches,
    reference_path_for,
    summarize,
)

pytestmark = [pytest.mark.api, pytest.mark.fixture_model]

# Chat checks replay a few prompts of each task kind through the chat template and the reasoning parser.
CHAT_SAMPLE_PER_KIND = 2


@pytest.fixture(scope="module")
def reference_rows(dsbench_engine: EngineInfo) -> list[ReferenceRow]:
    """The reference rows of the served model folder; skip when it is not the fixture model."""
    path = reference_path_for(dsbench_engine.model_path)
    if path is None:
        pytest.skip(
            f"the engine serves {dsbench_engine.model_path or dsbench_engine.model!r}, which has no "
            "reference.jsonl; reference outputs exist only for the fixture model fixtures/tiny-r1"
        )
    return load_reference(path)


@pytest.fixture(scope="module")
def engine_completions(
    dsbench_engine: EngineInfo, openai_client: httpx.Client, reference_rows: list[ReferenceRow]
) -> list[EngineCompletion]:
    """The engine's greedy completions of every reference prompt, from one batched request."""
    payload = completions_request(reference_rows, dsbench_engine.model)
    response = openai_client.post("/v1/completions", json=payload)
    assert response.status_code == 200, f"/v1/completions: {response.status_code} {response.text[:500]}"
    return completions_from_response(response.json(), len(reference_rows))


def test_greedy_tokens_reproduce_reference(
    reference_rows: list[ReferenceRow], engine_completions: list[EngineCompletion]
) -> None:
    """Every reference completion, eos included, comes back token for token."""
    failures = [
        message
        for row, completion in zip(reference_rows, engine_completions, strict=True)
        if (message := compare_tokens(row, completion))
    ]
    assert not failures, summarize(failures, len(reference_rows))


def test_logprobs_reproduce_reference_within_tolerance(
    reference_rows: list[ReferenceRow], engine_completions: list[EngineCompletion]
) -> None:
    """Chosen-token and top-5 logprobs agree with the fp32 reference within the documented tolerance."""
    if all(c.logprobs is None for c in engine_completions):
        pytest.fail("the engine returned no logprobs although the request asked for 5", pytrace=False)
    failures = [
        message
        for row, completion in zip(reference_rows, engine_completions, strict=True)
        if not compare_tokens(row, completion) and (message := compare_logprobs(row, completion))
    ]
    tolerance = f"\ntolerance: |delta| <= {DEFAULT_TOLERANCE.describe()}"
    assert not failures, summarize(failures, len(reference_rows)) + tolerance


def test_finish_reason_is_stop_at_eos(
    reference_rows: list[ReferenceRow], engine_completions: list[EngineCompletion], dsbench_engine: EngineInfo
) -> None:
    """Completions that end with eos in the reference end with ``finish_reason: stop``, the longest one too,
    whose eos is the last token max_tokens allows (unless the engine profile declares otherwise)."""
    max_tokens = completions_request(reference_rows, dsbench_engine.model)["max_tokens"]
    declared = dsbench_engine.behaviour.eos_at_max_tokens_reason
    wrong = finish_reason_problems(reference_rows, engine_completions, max_tokens, declared)
    note = "" if declared == "stop" else (
        f"\n(engine profile {dsbench_engine.name} declares eos_at_max_tokens_reason={declared!r})")
    assert not wrong, summarize(wrong, len(reference_rows)) + note


def _chat_sample(rows: list[ReferenceRow]) -> list[ReferenceRow]:
    taken: dict[str, int] = {}
    sample = []
    for row in rows:
        kind = row.id.rsplit("-", 1)[0]
        if taken.get(kind, 0) < CHAT_SAMPLE_PER_KIND:
            taken[kind] = taken.get(kind, 0) + 1
            sample.append(row)
    return sample


def test_chat_answers_split_reasoning_from_content(
    dsbench_engine: EngineInfo, openai_client: httpx.Client, reference_rows: list[ReferenceRow]
) -> None:
    """Through the chat template and reasoning parser, reasoning and answer land in their own fields."""
    field = dsbench_engine.behaviour.reasoning_field
    failures = []
    for row in _chat_sample(reference_rows):
        payload: dict[str, Any] = {
            "model": dsbench_engine.model,
            "messages": [dict(m) for m in row.messages],
            "max_tokens": len(row.completion_token_ids) + 8,
            "temperature": 0.0,
            "top_p": 1.0,
            "n": 1,
            "stream": False,
        }
        response = openai_client.post("/v1/chat/completions", json=payload)
        assert response.status_code == 200, f"chat answered {response.status_code}: {response.text[:500]}"
        message = response.json()["choices"][0]["message"]
        reasoning, content = message.get(field), message.get("content")
        if (reasoning or "").strip() != row.reasoning.strip() or (content or "").strip() != row.answer:
            failures.append(
                f"[{row.id}] expected {field}={row.reasoning.strip()!r} content={row.answer!r}, got "
                f"{field}={reasoning!r} content={content!r}"
            )
    assert not failures, summarize(failures, len(_chat_sample(reference_rows)))


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_usage_prompt_tokens_equal_the_known_lengths(
    endpoint: str, dsbench_engine: EngineInfo, openai_client: httpx.Client, reference_rows: list[ReferenceRow]
) -> None:
    """Prompts of lengths counted when the fixture was built: usage.prompt_tokens must equal them exactly (one
    BOS, the chat template's tokens, no double BOS), with no tokenizer of the suite's own in between."""
    prompts = [p for p in load_token_lengths() if p["raw_tokens"] <= 128]  # the long ones cost time, not coverage
    wrong = prompt_token_mismatches(openai_client, dsbench_engine.model, prompts, endpoint)
    assert not wrong, summarize(wrong, len(prompts))
