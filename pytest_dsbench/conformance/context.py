"""What every check gets: the engine under test, its declared profile, the deployment's limits, a client,
token accounting and the probe prompts.

Probe prompts: against the project's fixture model (a folder with ``reference.jsonl``) the checks ask its own
memorised questions, whose answers and lengths are known; against a real DeepSeek model they ask short
arithmetic questions. Requests always spell out ``temperature``, ``top_p`` and ``max_tokens``: engines apply
the model's generation_config.json to omitted fields, so "defaults" differ between engines.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import httpx

from pytest_dsbench.conformance.client import ApiClient, Reply, StreamReply
from pytest_dsbench.conformance.expect import skip
from pytest_dsbench.conformance.tokens import (
    EngineTokenizer,
    LocalTokenizer,
    TokenCounter,
    local_tokenizer_dir,
)
from pytest_dsbench.engines.base import EngineBehaviour

T = TypeVar("T")
REASONING_KEYS = ("reasoning", "reasoning_content")
DROP = object()
"""Pass as a parameter value to remove a default field from a request body."""

GENERIC_TASKS = (
    ("What is 17 * 23?", "391"),
    ("What is 12 + 30?", "42"),
    ("What is 45 + 27?", "72"),
    ("What is 8 * 9?", "72"),
    ("What is 31 + 14?", "45"),
    ("What is 6 * 7?", "42"),
    ("What is 19 + 23?", "42"),
    ("What is 13 * 3?", "39"),
)
GENERIC_COMPLETION_PROMPT = "The capital of France is Paris. The capital of Italy is Rome. The capital of"
BOS_TEXT = "<｜begin▁of▁sentence｜>"


@dataclass(frozen=True)
class Task:
    """A question the served model answers with a known answer, and a raw-text prompt for /v1/completions."""

    question: str
    answer: str
    completion_prompt: str
    completion_tokens: int | None = None


@dataclass(frozen=True)
class Target:
    """The engine and deployment under test."""

    engine: str
    model: str
    behaviour: EngineBehaviour
    max_model_len: int
    hw_max_model_len: int | None = None
    max_input_len: int | None = None
    max_input_len_enforced: bool = False
    model_path: str | None = None
    tokenizer_path: str | None = None
    version: str = "unknown"


def load_tasks(model_path: str | None) -> list[Task] | None:
    """The fixture model's own tasks from ``<model>/reference.jsonl``, or ``None`` for another model."""
    if not model_path:
        return None
    path = Path(model_path) / "reference.jsonl"
    if not path.is_file():
        return None
    tasks = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("finish_reason") != "stop":
            continue
        prompt = str(row.get("prompt", ""))
        tasks.append(
            Task(
                question=str(row["messages"][-1]["content"]),
                answer=str(row["answer"]),
                completion_prompt=prompt.removeprefix(BOS_TEXT),
                completion_tokens=len(row.get("completion_token_ids", [])) or None,
            )
        )
    return tasks or None


def generic_tasks() -> list[Task]:
    return [Task(q, a, GENERIC_COMPLETION_PROMPT) for q, a in GENERIC_TASKS]


@dataclass
class ApiContext:
    """The conformance checks' view of one engine: target, client, tokens, probes and a memo of results."""

    target: Target
    api: ApiClient
    tasks: list[Task] = field(default_factory=generic_tasks)
    counter: TokenCounter | None = None
    counter_error: str | None = None
    answer_max_tokens: int = 0
    concurrency: int = 32
    health_latency_s_max: float = 2.0
    """The hardware profile's ``[slo] health_latency_s_max``: how long GET /health may take under load."""
    task_only_model: bool = False
    """True for the fixture model: it answers its own tasks and nothing else (no free text, no JSON)."""
    memo_store: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.answer_max_tokens:
            known = [t.completion_tokens for t in self.tasks if t.completion_tokens]
            if known:
                self.answer_max_tokens = max(known) + 32
            else:
                self.answer_max_tokens = max(64, min(4096, self.target.max_model_len // 2))

    # -- construction ---------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        target: Target,
        client: httpx.Client,
        request_timeout_s: float,
        counter: TokenCounter | None = None,
        tasks: list[Task] | None = None,
    ) -> ApiContext:
        """Build the context; the token counter is the local tokenizer if there is one, else the engine's."""
        api = ApiClient(client, request_timeout_s)
        error = None
        if counter is None:
            directory = local_tokenizer_dir(target.tokenizer_path, target.model_path)
            if directory is not None:
                try:
                    counter = LocalTokenizer(directory)
                except Exception as exc:  # a broken tokenizer folder must not break every check
                    error = (
                        f"the local tokenizer {directory} could not be loaded ({type(exc).__name__}: {exc})"
                    )
            if counter is None and target.behaviour.tokenize_api == "vllm":
                counter = EngineTokenizer(api, target.model)
            elif counter is None and error is None:
                error = (
                    f"no token counter: pass --tokenizer PATH (a local tokenizer folder); engine "
                    f"{target.engine} has no chat tokenize endpoint"
                )
        fixture_tasks = None if tasks else load_tasks(target.model_path)
        return cls(
            target=target,
            api=api,
            tasks=tasks or fixture_tasks or generic_tasks(),
            counter=counter,
            counter_error=error,
            task_only_model=fixture_tasks is not None,
        )

    # -- helpers for checks ----------------------------------------------------------------------------------
    @property
    def behaviour(self) -> EngineBehaviour:
        return self.target.behaviour

    @property
    def task(self) -> Task:
        return self.tasks[0]

    @property
    def long_task(self) -> Task:
        """The task with the longest known answer: the default /v1/completions prompt, so stop checks have
        several words to choose from."""
        return max(self.tasks, key=lambda t: t.completion_tokens or 0)

    def tokens(self) -> TokenCounter:
        """The token counter, or skip the check with the reason there is none."""
        if self.counter is None:
            skip(self.counter_error or "no token counter available")
        return self.counter

    def require(self, feature: str, why: str = "") -> None:
        """Skip unless the engine profile declares ``feature``."""
        if feature not in self.behaviour.features:
            skip(
                f"engine {self.target.engine} does not declare feature {feature!r}{': ' + why if why else ''}"
            )

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """Compute once per session (e.g. the deterministic stream/non-stream pair several checks compare)."""
        if key not in self.memo_store:
            self.memo_store[key] = compute()
        value: T = self.memo_store[key]
        return value

    def with_behaviour(self, **changes: Any) -> ApiContext:
        """A copy with some profile fields changed (self-tests use it to exercise profile branches)."""
        return replace(
            self, target=replace(self.target, behaviour=replace(self.behaviour, **changes)), memo_store={}
        )

    # -- request bodies --------------------------------------------------------------------------------------
    def _finish(self, body: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        body.update(params)
        return {k: v for k, v in body.items() if v is not DROP}

    def chat_body(self, content: str | None = None, *, messages: Any = None, **params: Any) -> dict[str, Any]:
        """A chat request for the served model: greedy, explicit sampling, enough tokens for a full answer."""
        body: dict[str, Any] = {
            "model": self.target.model,
            "messages": messages or [{"role": "user", "content": content or self.task.question}],
            "temperature": 0,
            "top_p": 1,
            "max_tokens": self.answer_max_tokens,
        }
        return self._finish(body, params)

    def completion_body(self, prompt: Any = None, **params: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.target.model,
            "prompt": prompt or self.long_task.completion_prompt,
            "temperature": 0,
            "top_p": 1,
            "max_tokens": 16,
        }
        return self._finish(body, params)

    def chat(self, content: str | None = None, **params: Any) -> Reply:
        return self.api.post("/v1/chat/completions", self.chat_body(content, **params))

    def chat_stream(
        self, content: str | None = None, *, timeout_s: float | None = None, **params: Any
    ) -> StreamReply:
        return self.api.stream(
            "/v1/chat/completions", self.chat_body(content, stream=True, **params), timeout_s=timeout_s
        )

    def completion(self, prompt: Any = None, **params: Any) -> Reply:
        return self.api.post("/v1/completions", self.completion_body(prompt, **params))

    def completion_stream(self, prompt: Any = None, **params: Any) -> StreamReply:
        return self.api.stream("/v1/completions", self.completion_body(prompt, stream=True, **params))

    # -- reading responses -----------------------------------------------------------------------------------
    def reasoning_of(self, message: dict[str, Any]) -> str | None:
        """The reasoning text under the profile's declared key."""
        value = message.get(self.behaviour.reasoning_field)
        return value if isinstance(value, str) else None
