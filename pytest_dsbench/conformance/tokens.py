"""Token accounting for the checks: a local tokenizer (``--tokenizer`` or the model folder) or the engine's
own tokenize endpoint. Never a model hub: the local tokenizer loads with ``local_files_only``.

The local tokenizer is the independent oracle (it catches a server that renders or counts wrongly, e.g. a
double bos); the engine endpoint is the fallback that still ties ``usage`` to what the server says it ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pytest_dsbench.conformance.client import ApiClient
from pytest_dsbench.errors import require


class TokenCounter(Protocol):
    """Counts tokens the way the served model does."""

    source: str

    def chat_ids(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        """Ids of the chat prompt rendered with the generation prompt (bos included once, by the template)."""

    def chat_tokens(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
        """``len(chat_ids(...))``."""

    def text_ids(self, text: str, add_bos: bool) -> list[int]:
        """Ids of plain text, with the tokenizer's bos when ``add_bos`` (what /v1/completions does)."""

    def text_tokens(self, text: str, add_bos: bool) -> int:
        """``len(text_ids(...))``."""

    def bos_id(self) -> int | None:
        """The bos token id, if the tokenizer has one."""


class LocalTokenizer:
    """A tokenizer folder loaded with ``transformers`` (offline), rendering chats with its own template."""

    def __init__(self, path: str) -> None:
        transformers: Any = require("transformers", "cpu", "Token accounting with a local --tokenizer")
        self.path = path
        self.source = f"local tokenizer {path}"
        self.tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)

    def chat_ids(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        prompt = self.tok.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, tokenize=False
        )
        return list(self.tok(prompt, add_special_tokens=False)["input_ids"])

    def chat_tokens(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
        return len(self.chat_ids(messages, tools))

    def text_ids(self, text: str, add_bos: bool) -> list[int]:
        return list(self.tok(text, add_special_tokens=add_bos)["input_ids"])

    def text_tokens(self, text: str, add_bos: bool) -> int:
        return len(self.text_ids(text, add_bos))

    def bos_id(self) -> int | None:
        value = self.tok.bos_token_id
        return int(value) if value is not None else None


class EngineTokenizer:
    """The engine's tokenize endpoint: vLLM ``POST /tokenize`` (text and chat messages)."""

    def __init__(self, api: ApiClient, model: str) -> None:
        self.api = api
        self.model = model
        self.source = "the engine's POST /tokenize"
        self._bos: int | None = None

    def _tokens(self, body: dict[str, Any]) -> list[int]:
        reply = self.api.post("/tokenize", {"model": self.model, **body})
        tokens = reply.obj().get("tokens")
        if reply.status != 200 or not isinstance(tokens, list):
            raise RuntimeError(f"POST /tokenize failed: {reply.describe()}")
        return [int(t) for t in tokens]

    def chat_ids(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        body: dict[str, Any] = {
            "messages": messages,
            "add_generation_prompt": True,
            "add_special_tokens": False,
        }
        if tools:
            body["tools"] = tools
        return self._tokens(body)

    def chat_tokens(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
        return len(self.chat_ids(messages, tools))

    def text_ids(self, text: str, add_bos: bool) -> list[int]:
        return self._tokens({"prompt": text, "add_special_tokens": add_bos})

    def text_tokens(self, text: str, add_bos: bool) -> int:
        return len(self.text_ids(text, add_bos))

    def bos_id(self) -> int | None:
        if self._bos is None:
            with_bos = self.text_ids("a", True)
            without = self.text_ids("a", False)
            self._bos = with_bos[0] if len(with_bos) == len(without) + 1 else None
        return self._bos


def local_tokenizer_dir(*candidates: str | None) -> str | None:
    """The first candidate folder that holds a tokenizer (tokenizer.json or tokenizer_config.json)."""
    for candidate in candidates:
        if candidate and any(
            (Path(candidate) / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")
        ):
            return candidate
    return None


def exact_chat_content(
    counter: TokenCounter, target_tokens: int, units: tuple[str, ...] = (" is", " x", "x", " a")
) -> str | None:
    """User content whose one-message chat prompt is exactly ``target_tokens`` tokens, or ``None``.

    Tries units that add one token per repetition (checked, not assumed) and solves the count from two
    measurements; the result is verified before it is returned.
    """

    def chat_count(text: str) -> int:
        return counter.chat_tokens([{"role": "user", "content": text}])

    for unit in units:
        first = unit.strip() or unit
        small, large = 8, 24
        c_small = chat_count(first + unit * (small - 1))
        c_large = chat_count(first + unit * (large - 1))
        if c_large - c_small != large - small:
            continue
        overhead = c_small - small
        repeats = target_tokens - overhead
        if repeats < 1:
            return None
        text = first + unit * (repeats - 1)
        if chat_count(text) == target_tokens:
            return text
    return None
