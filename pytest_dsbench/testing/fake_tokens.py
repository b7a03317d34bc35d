"""The fake engine's tokenizer: one token per character, DeepSeek's special tokens count as one."""

from __future__ import annotations

import re

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK = "<think>"
END_THINK = "</think>"
SPECIALS = (BOS, EOS, USER, ASSISTANT, THINK, END_THINK)
_SPECIAL_IDS = {tok: 200000 + i for i, tok in enumerate(SPECIALS)}
_SPLIT = re.compile("(" + "|".join(re.escape(s) for s in SPECIALS) + ")")


def tokenize(text: str) -> list[str]:
    """Split text into fake tokens."""
    tokens: list[str] = []
    for part in _SPLIT.split(text):
        if not part:
            continue
        tokens.extend([part] if part in _SPECIAL_IDS else list(part))
    return tokens


def token_ids(text: str) -> list[int]:
    return [_SPECIAL_IDS.get(tok, ord(tok[0])) for tok in tokenize(text)]


def count(text: str) -> int:
    return len(tokenize(text))


def render_chat(messages: list[dict[str, object]]) -> str:
    """DeepSeek-R1's template shape: bos, system, user/assistant turns, generation prompt ``<think>\\n``."""
    system = "".join(str(m.get("content") or "") for m in messages if m.get("role") == "system")
    out = BOS + system
    for message in messages:
        role = message.get("role")
        content = str(message.get("content") or "")
        if role == "user":
            out += USER + content
        elif role == "assistant":
            out += ASSISTANT + content + EOS
    return out + ASSISTANT + THINK + "\n"
