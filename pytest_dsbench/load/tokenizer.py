"""Tokenizers for token-exact prompts and retokenized output counts, loaded from local files only.

Two kinds: a Hugging Face tokenizer folder (``tokenizer.json`` through the light ``tokenizers`` library, else
``transformers`` with ``local_files_only``), and ``chars``: one token per character with DeepSeek's special
tokens counted as one, which is what the self-tests' fake engine counts. A model hub is never contacted.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pytest_dsbench.errors import DsbenchUsageError

DEEPSEEK_SPECIALS = (
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "<｜User｜>",
    "<｜Assistant｜>",
    "<think>",
    "</think>",
)
CHARS = "chars"


class Tokenizer(Protocol):
    """What the load generator needs from a tokenizer."""

    name: str

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens added (sglang's retokenization rule)."""
        ...

    def decode(self, ids: list[int]) -> str: ...

    def random_vocab(self) -> list[int]:
        """Ids that random prompts may use (special and added tokens excluded)."""
        ...

    def num_special_tokens_to_add(self) -> int:
        """Tokens the server adds when it encodes a prompt (a BOS token, usually)."""
        ...

    def vocab_size(self) -> int:
        """The base vocabulary size sglang's random-ids draws from (0: no such id space)."""
        ...


class CharTokenizer:
    """One token per character; DeepSeek's special tokens are one token each."""

    name = CHARS
    _split = re.compile("(" + "|".join(re.escape(s) for s in DEEPSEEK_SPECIALS) + ")")
    _special_ids: ClassVar[dict[str, int]] = {tok: 0x110000 + i for i, tok in enumerate(DEEPSEEK_SPECIALS)}
    _by_id: ClassVar[dict[int, str]] = {v: k for k, v in _special_ids.items()}

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for part in self._split.split(text):
            if part in self._special_ids:
                ids.append(self._special_ids[part])
            elif part:
                ids.extend(ord(c) for c in part)
        return ids

    def decode(self, ids: list[int]) -> str:
        return "".join(self._by_id.get(i) or chr(i) for i in ids)

    def random_vocab(self) -> list[int]:
        return [ord(c) for c in "abcdefghijklmnopqrstuvwxyz "]

    def num_special_tokens_to_add(self) -> int:
        return 0

    def vocab_size(self) -> int:
        return 0  # code points are no id space to draw from: random-ids uses printable letters


class HfTokenizer:
    """A local Hugging Face tokenizer folder."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self._fast: Any = None
        self._hf: Any = None
        self._vocab: list[int] | None = None
        tokenizer_json = path / "tokenizer.json"
        if tokenizer_json.is_file():
            from tokenizers import Tokenizer as FastTokenizer

            self._fast = FastTokenizer.from_file(str(tokenizer_json))
        else:
            from transformers import AutoTokenizer

            self._hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)

    def encode(self, text: str) -> list[int]:
        if self._fast is not None:
            return list(self._fast.encode(text, add_special_tokens=False).ids)
        return list(self._hf.encode(text, add_special_tokens=False))

    def encoded_lengths(self, texts: list[str]) -> list[int]:
        """``len(encode(t))`` for each text, in one call: the batch API that skips the character offsets
        (the same ids; nothing here reads offsets), 15-20% less CPU than encoding one text at a time."""
        if self._fast is not None:
            batch = getattr(self._fast, "encode_batch_fast", self._fast.encode_batch)
            return [len(e) for e in batch(texts, add_special_tokens=False)]
        return [len(self.encode(t)) for t in texts]

    def decode(self, ids: list[int]) -> str:
        if self._fast is not None:
            return str(self._fast.decode(ids, skip_special_tokens=False))
        return str(self._hf.decode(ids, skip_special_tokens=False))

    def random_vocab(self) -> list[int]:
        if self._vocab is None:
            self._vocab = self._round_trip_vocab()
        return self._vocab

    def _round_trip_vocab(self) -> list[int]:
        """Ordinary tokens that decode to text which encodes back to themselves (byte pieces do not)."""
        if self._fast is not None:
            vocab: dict[str, int] = self._fast.get_vocab(with_added_tokens=False)
            added = {t.content for t in self._fast.get_added_tokens_decoder().values()}
        else:
            vocab = dict(self._hf.get_vocab())
            added = set(self._hf.all_special_tokens) | set(getattr(self._hf, "added_tokens_encoder", {}))
        ids = sorted(
            i
            for tok, i in vocab.items()
            if tok not in added and not (tok.startswith("<") and tok.endswith(">") and len(tok) > 2)
        )
        if self._fast is not None:
            texts = list(self._fast.decode_batch([[i] for i in ids], skip_special_tokens=False))
            back = [list(e.ids) for e in self._fast.encode_batch(texts, add_special_tokens=False)]
        else:
            texts = [str(self._hf.decode([i])) for i in ids]
            back = [list(self._hf.encode(t, add_special_tokens=False)) for t in texts]
        return [
            i
            for i, text, enc in zip(ids, texts, back, strict=True)
            if enc == [i] and text.isprintable() and text.strip()
        ]

    def vocab_size(self) -> int:
        if self._fast is not None:
            return int(self._fast.get_vocab_size(with_added_tokens=False))
        return int(self._hf.vocab_size)

    def num_special_tokens_to_add(self) -> int:
        if self._fast is not None:
            return len(self._fast.encode("", add_special_tokens=True).ids)
        return int(self._hf.num_special_tokens_to_add())


def encoded_lengths(tok: Tokenizer, texts: list[str]) -> list[int]:
    """Token counts of ``texts`` (sglang's retokenization, no special tokens), batched where the tokenizer can."""
    batch = getattr(tok, "encoded_lengths", None)
    if batch is not None:
        return list(batch(texts))
    return [len(tok.encode(t)) for t in texts]


@lru_cache(maxsize=8)
def load_tokenizer(spec: str) -> Tokenizer:
    """``chars`` or a local tokenizer folder; a one-line usage error when it cannot be loaded."""
    if spec == CHARS:
        return CharTokenizer()
    path = Path(spec)
    if not path.is_dir():
        raise DsbenchUsageError(
            f"tokenizer {spec!r} is not a local folder. Pass --tokenizer PATH (a folder with "
            "tokenizer.json), or --tokenizer chars for one token per character (fake engines)."
        )
    try:
        return HfTokenizer(path)
    except Exception as exc:
        raise DsbenchUsageError(f"cannot load the tokenizer in {path}: {type(exc).__name__}: {exc}") from None
