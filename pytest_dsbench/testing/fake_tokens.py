"""The fake engine's tokenizer and chat template: a token per character, DeepSeek's special tokens are one.

The template follows DeepSeek-R1's: bos, the system prompt, ``<｜User｜>`` turns, assistant history with only
the text after ``</think>``, tool calls and tool outputs in DeepSeek's markers, and the generation prompt
``<｜Assistant｜><think>\\n``. :class:`FakeTokenCounter` is the same tokenizer seen from the client side, so
the self-tests have an independent "local tokenizer" to count with, as ``--tokenizer`` gives for a real model.
"""

from __future__ import annotations

import json
import re
from typing import Any

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK = "<think>"
END_THINK = "</think>"
TOOL_CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
TOOL_CALLS_END = "<｜tool▁calls▁end｜>"
TOOL_CALL_BEGIN = "<｜tool▁call▁begin｜>"
TOOL_CALL_END = "<｜tool▁call▁end｜>"
TOOL_SEP = "<｜tool▁sep｜>"
TOOL_OUTPUTS_BEGIN = "<｜tool▁outputs▁begin｜>"
TOOL_OUTPUTS_END = "<｜tool▁outputs▁end｜>"
TOOL_OUTPUT_BEGIN = "<｜tool▁output▁begin｜>"
TOOL_OUTPUT_END = "<｜tool▁output▁end｜>"
SPECIALS = (
    BOS,
    EOS,
    USER,
    ASSISTANT,
    THINK,
    END_THINK,
    TOOL_CALLS_BEGIN,
    TOOL_CALLS_END,
    TOOL_CALL_BEGIN,
    TOOL_CALL_END,
    TOOL_SEP,
    TOOL_OUTPUTS_BEGIN,
    TOOL_OUTPUTS_END,
    TOOL_OUTPUT_BEGIN,
    TOOL_OUTPUT_END,
)
SPECIAL_BASE_ID = 200000
VOCAB_SIZE = SPECIAL_BASE_ID + len(SPECIALS)
_SPECIAL_IDS = {tok: SPECIAL_BASE_ID + i for i, tok in enumerate(SPECIALS)}
_ID_SPECIALS = {i: tok for tok, i in _SPECIAL_IDS.items()}
_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")
GENERATION_PROMPT = ASSISTANT + THINK + "\n"


def tokenize(text: str) -> list[str]:
    """Split text into fake tokens: each special token whole, every other character alone."""
    tokens: list[str] = []
    for part in _SPLIT.split(text):
        if not part:
            continue
        tokens.extend([part] if part in _SPECIAL_IDS else list(part))
    return tokens


def token_id(token: str) -> int:
    return _SPECIAL_IDS.get(token, ord(token[0]))


def token_ids(text: str) -> list[int]:
    return [token_id(tok) for tok in tokenize(text)]


def valid_id(token: int) -> bool:
    """True for ids the fake vocabulary has (code points and the special tokens)."""
    return (0 <= token < 0x110000 and not 0xD800 <= token < 0xE000) or token in _ID_SPECIALS


def decode(ids: list[int]) -> str:
    """Ids back to text (inverse of :func:`token_ids`)."""
    return "".join(_ID_SPECIALS.get(i) or chr(i) for i in ids)


def count(text: str) -> int:
    return len(tokenize(text))


def message_text(content: Any) -> str:
    """A message's text: a string, or the text parts of an OpenAI content list joined with newlines."""
    if content is None:
        return ""
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return str(content)


def render_tool_calls(tool_calls: list[dict[str, Any]]) -> str:
    calls = "\n".join(
        f"{TOOL_CALL_BEGIN}{c.get('type', 'function')}{TOOL_SEP}{c['function']['name']}\n```json\n"
        f"{c['function'].get('arguments', '{}')}\n```{TOOL_CALL_END}"
        for c in tool_calls
    )
    return f"{TOOL_CALLS_BEGIN}{calls}{TOOL_CALLS_END}{EOS}"


def render_chat(
    messages: list[dict[str, Any]],
    *,
    add_generation_prompt: bool = True,
    keep_history_reasoning: bool = False,
    generation_prompt: str = GENERATION_PROMPT,
) -> str:
    """DeepSeek-R1's template shape (see the module docstring)."""
    system = "".join(message_text(m.get("content")) for m in messages if m.get("role") == "system")
    out = BOS + system
    in_tool = False
    first_output = True
    for message in messages:
        role = message.get("role")
        text = message_text(message.get("content"))
        if role == "user":
            in_tool = False
            out += USER + text
        elif role == "assistant" and message.get("content") is None and message.get("tool_calls"):
            in_tool = False
            out += ASSISTANT + render_tool_calls(list(message["tool_calls"]))
        elif role == "assistant":
            if in_tool:
                out += TOOL_OUTPUTS_END + text + EOS
                in_tool = False
            else:
                if END_THINK in text and not keep_history_reasoning:
                    text = text.split(END_THINK)[-1]
                out += ASSISTANT + text + EOS
        elif role == "tool":
            out += (TOOL_OUTPUTS_BEGIN if first_output else "\n") + TOOL_OUTPUT_BEGIN + text + TOOL_OUTPUT_END
            first_output = False
            in_tool = True
    if in_tool:
        out += TOOL_OUTPUTS_END
    elif add_generation_prompt:
        out += generation_prompt
    return out


class FakeTokenCounter:
    """Client-side counts for the fake engine's model, shaped like the suite's local-tokenizer counter."""

    source = "fake local tokenizer"

    def chat_ids(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> list[int]:
        return token_ids(render_chat(messages))

    def chat_tokens(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> int:
        return len(self.chat_ids(messages, tools))

    def text_tokens(self, text: str, add_bos: bool) -> int:
        return count(text) + (1 if add_bos else 0)

    def text_ids(self, text: str, add_bos: bool) -> list[int]:
        return ([token_id(BOS)] if add_bos else []) + token_ids(text)

    def bos_id(self) -> int:
        return token_id(BOS)

    def token_strs(self, ids: list[int]) -> list[str]:
        return [decode([i]) for i in ids]


def json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)
