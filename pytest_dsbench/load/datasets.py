"""Workload data sets: ``random`` and ``random-ids`` with sglang.bench_serving's semantics, ShareGPT,
fixed-length.

Lengths follow sglang's convention (bench_tools.md 1.5): ``randint(max(int(L * r), 1), L + 1)``, so the
default range ratio 0 means uniform in [1, L] and ratio 1 means exactly L (vLLM >= 0.8.4 uses the opposite
convention; the workload records which one produced a result). Seeding matches sglang's
(``np.random.seed(seed)`` order: input lengths, output lengths, then the ShareGPT shuffle), so the same seed
gives the same lengths.

``random-ids`` is sglang's construction byte for byte (ids ``(offset + i + j) % vocab_size`` decoded, the
sampled length declared), so a cross-check with sglang.bench_serving sends the very same prompts; ``fixed``
gives distinct token-exact prompts of exactly the given lengths.

As in sglang, the tokens the server adds (a BOS token) are taken off each random prompt, so the server sees
the sampled length; the declared ``prompt_len`` is the prompt text's own length (sglang's ``Total input
tokens``). Unlike sglang, prompts are token-exact: after decoding, a prompt is re-encoded and adjusted until
it encodes to exactly the declared length (sglang PR #15732 measured 92% of its random prompts off by some
tokens); when a tokenizer makes that impossible the declared length is the re-encoded one, never a guess.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_dsbench.errors import DsbenchUsageError
from pytest_dsbench.load.tokenizer import Tokenizer
from pytest_dsbench.workloads.entry import DatasetName

DATASETS: tuple[str, ...] = ("random", "random-ids", "sharegpt", "fixed")
SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
_WORDS = [
    "the",
    "model",
    "streams",
    "tokens",
    "while",
    "the",
    "scheduler",
    "batches",
    "requests",
    "across",
    "experts",
    "and",
    "layers",
    "so",
    "that",
    "throughput",
    "grows",
    "with",
    "concurrency",
    "until",
    "memory",
    "bandwidth",
    "or",
    "compute",
    "saturates",
    "and",
    "latency",
    "rises",
    "reasoning",
    "answers",
    "arrive",
    "after",
    "thinking",
    "ends",
]


@dataclass(frozen=True)
class DatasetSpec:
    """Which prompts to send: data set, count, lengths, sglang range ratio, seed and (ShareGPT) file."""

    name: DatasetName = "random"
    num_prompts: int = 1000
    input_len: int = 1024
    output_len: int = 1024
    range_ratio: float = 0.0
    seed: int = 1
    dataset_path: Path | None = None
    sharegpt_output_len: int | None = None
    context_len: int | None = None

    def describe(self) -> dict[str, Any]:
        """Provenance for reports and the history store."""
        return {
            "dataset": self.name,
            "num_prompts": self.num_prompts,
            "input_len": self.input_len,
            "output_len": self.output_len,
            "range_ratio": self.range_ratio,
            "range_convention": "sglang",
            "seed": self.seed,
            "dataset_path": str(self.dataset_path) if self.dataset_path else None,
        }


@dataclass(frozen=True)
class Prompt:
    """One request's prompt text, its token length and the number of tokens to generate."""

    text: str
    prompt_len: int
    output_len: int


def random_lens(rng: Any, length: int, ratio: float, n: int) -> list[int]:
    """sglang's ``compute_random_lens``: ``randint(max(int(L * r), 1), L + 1)`` for each of ``n`` requests."""
    if not 0.0 <= ratio <= 1.0:
        raise DsbenchUsageError(f"random range ratio {ratio} is outside [0, 1] (sglang convention: 1 = fixed length)")
    low = max(int(length * ratio), 1)
    return [int(x) for x in rng.randint(low, length + 1, size=n)]


def exact_text(tok: Tokenizer, ids: list[int], length: int, filler: list[int]) -> tuple[str, int]:
    """Text that re-encodes to exactly ``length`` tokens, built from ``ids``; returns (text, encoded length)."""
    pad = filler or ids or [0]
    ids = list(ids)
    while len(ids) < length:
        ids += pad[: length - len(ids)]
    text = tok.decode(ids[:length])
    n = len(tok.encode(text))
    for step in range(16):
        if n == length:
            break
        enc = tok.encode(text)
        if n > length:
            text = tok.decode(enc[:length])
        else:
            text = tok.decode(enc + [pad[(step + i) % len(pad)] for i in range(length - n)])
        n = len(tok.encode(text))
    return text, n


def _synthetic_ids(tok: Tokenizer, rng: random.Random, lens: list[int]) -> list[list[int]]:
    """Offline stand-in for ShareGPT text: one word-salad corpus, encoded once, read from distinct offsets.

    The corpus is random words, so windows at different offsets differ (no prefix-cache hits between prompts).
    """
    words = max(4096, 2 * len(lens), max(lens, default=1))
    corpus = tok.encode(" ".join(rng.choice(_WORDS) for _ in range(words)))
    offsets = (
        rng.sample(range(len(corpus)), len(lens))
        if len(lens) <= len(corpus)
        else [rng.randrange(len(corpus)) for _ in lens]
    )
    return [
        [corpus[(start + j) % len(corpus)] for j in range(length)] for start, length in zip(offsets, lens, strict=True)
    ]


def load_sharegpt(path: Path) -> list[tuple[str, str]]:
    """(first human turn, first answer) of every conversation with at least two turns."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DsbenchUsageError(
            f"ShareGPT file {path} does not exist. Give a local {SHAREGPT_FILE} (no download is attempted)."
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DsbenchUsageError(f"ShareGPT file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise DsbenchUsageError(f"ShareGPT file {path} must hold a JSON list of {{'conversations': [...]}} objects.")
    pairs = []
    for item in data:
        turns = item.get("conversations") if isinstance(item, dict) else None
        if isinstance(turns, list) and len(turns) >= 2:
            pairs.append((str(turns[0].get("value", "")), str(turns[1].get("value", ""))))
    if not pairs:
        raise DsbenchUsageError(f"ShareGPT file {path} has no conversation with two turns.")
    return pairs


def _text_lens(tok: Tokenizer, lens: list[int]) -> list[int]:
    """Sampled lengths minus the tokens the server adds itself (sglang: ``num_special_tokens_to_add``)."""
    specials = tok.num_special_tokens_to_add()
    return [max(1, n - specials) for n in lens]


def _random(spec: DatasetSpec, tok: Tokenizer, np_rng: Any, py_rng: random.Random) -> list[Prompt]:
    in_lens = _text_lens(tok, random_lens(np_rng, spec.input_len, spec.range_ratio, spec.num_prompts))
    out_lens = random_lens(np_rng, spec.output_len, spec.range_ratio, spec.num_prompts)
    vocab = tok.random_vocab()
    if spec.dataset_path is not None:
        sources = [p for p, _ in load_sharegpt(spec.dataset_path)]
        py_rng.shuffle(sources)
        windows = []
        for i in range(spec.num_prompts):
            ids = tok.encode(sources[i % len(sources)]) or vocab[:1]
            windows.append((ids * math.ceil(in_lens[i] / len(ids)))[: in_lens[i]])
    else:
        windows = _synthetic_ids(tok, py_rng, in_lens)
    prompts = []
    for i, ids in enumerate(windows):
        text, n = exact_text(tok, ids, in_lens[i], vocab)
        prompts.append(Prompt(text, n, out_lens[i]))
    return prompts


def _random_ids(spec: DatasetSpec, tok: Tokenizer, np_rng: Any, fixed: bool) -> list[Prompt]:
    ratio = 1.0 if fixed else spec.range_ratio
    in_lens = _text_lens(tok, random_lens(np_rng, spec.input_len, ratio, spec.num_prompts))
    out_lens = random_lens(np_rng, spec.output_len, ratio, spec.num_prompts)
    id_space = tok.vocab_size()
    if not fixed and id_space > 0:
        # sglang's own construction, byte for byte: ids (offset + i + j) % vocab_size, decoded, lengths as
        # sampled (not re-encoded), so a cross-check with sglang.bench_serving sends identical prompts
        offsets = np_rng.randint(0, id_space, size=spec.num_prompts)
        return [
            Prompt(
                tok.decode([int((offsets[i] + i + j) % id_space) for j in range(in_lens[i])]), in_lens[i], out_lens[i]
            )
            for i in range(spec.num_prompts)
        ]
    vocab = tok.random_vocab()
    if not vocab:
        raise DsbenchUsageError(f"tokenizer {tok.name} has no ordinary tokens to build random prompts from.")
    offsets = [int(x) for x in np_rng.randint(0, len(vocab), size=spec.num_prompts)]
    prompts = []
    for i in range(spec.num_prompts):
        start = i * 7919 if fixed else offsets[i] + i
        ids = [vocab[(start + j) % len(vocab)] for j in range(in_lens[i])]
        text, n = exact_text(tok, ids, in_lens[i], vocab)
        prompts.append(Prompt(text, n, out_lens[i]))
    return prompts


def _sharegpt(spec: DatasetSpec, tok: Tokenizer, py_rng: random.Random) -> list[Prompt]:
    if spec.dataset_path is None:
        raise DsbenchUsageError(f"the sharegpt data set needs a local file: pass its path ({SHAREGPT_FILE}).")
    pairs = load_sharegpt(spec.dataset_path)
    py_rng.shuffle(pairs)
    prompts: list[Prompt] = []
    for prompt, completion in pairs:
        if len(prompts) == spec.num_prompts:
            break
        prompt_len = len(tok.encode(prompt)) + tok.num_special_tokens_to_add()
        out = spec.sharegpt_output_len or len(tok.encode(completion))
        if prompt_len < 2 or out < 2:
            continue
        if spec.context_len is not None and prompt_len + out > spec.context_len:
            continue
        prompts.append(Prompt(prompt, prompt_len, out))
    if len(prompts) < spec.num_prompts:
        raise DsbenchUsageError(
            f"{spec.dataset_path} gives only {len(prompts)} usable conversations; "
            f"{spec.num_prompts} prompts were asked for."
        )
    return prompts


def build(spec: DatasetSpec, tok: Tokenizer) -> list[Prompt]:
    """The prompts of ``spec``, deterministic for a given seed and tokenizer."""
    import numpy as np

    if spec.name not in DATASETS:
        raise DsbenchUsageError(f"unknown data set {spec.name!r}. Valid data sets: {', '.join(DATASETS)}.")
    if spec.num_prompts < 1:
        raise DsbenchUsageError(f"num_prompts must be at least 1 (got {spec.num_prompts}).")
    np_rng = np.random.RandomState(spec.seed)
    py_rng = random.Random(spec.seed)
    if spec.name == "random":
        return _random(spec, tok, np_rng, py_rng)
    if spec.name in ("random-ids", "fixed"):
        return _random_ids(spec, tok, np_rng, fixed=spec.name == "fixed")
    return _sharegpt(spec, tok, py_rng)


SALT_TOKENS = 4
"""Tokens at the start of each prompt that a salt replaces: the first KV block then differs, and with it every
block hash after it (prefix caches hash blocks in a chain)."""


def salted(prompts: list[Prompt], tok: Tokenizer, salt: int) -> list[Prompt]:
    """The prompts with their first :data:`SALT_TOKENS` tokens drawn from ``salt``'s random stream (each prompt
    its own), at the same token lengths: a cache filled by any other salt cannot serve them
    (:mod:`pytest_dsbench.load.prefix_cache`)."""
    rng = random.Random(salt)
    vocab = tok.random_vocab()
    if not vocab:
        return prompts
    out = []
    for prompt in prompts:
        ids = tok.encode(prompt.text)
        head = min(SALT_TOKENS, len(ids))
        text, n = exact_text(tok, [rng.choice(vocab) for _ in range(head)] + ids[head:], len(ids), vocab)
        out.append(Prompt(text, prompt.prompt_len - len(ids) + n, prompt.output_len))
    return out
