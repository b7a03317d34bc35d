"""Data sets and arrivals: sglang's length convention and seeding, token-exact prompts, ShareGPT, schedules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pytest_dsbench.errors import DsbenchUsageError
from pytest_dsbench.load import arrivals
from pytest_dsbench.load.datasets import DatasetSpec, build, random_lens
from pytest_dsbench.load.tokenizer import CharTokenizer, HfTokenizer, encoded_lengths, load_tokenizer

CHARS = CharTokenizer()


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small byte-level BPE tokenizer that adds a BOS token, like DeepSeek's (merges make lengths non-trivial)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<bos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = ["the model streams tokens while the scheduler batches requests"] * 50 + ["alpha beta gamma"] * 20
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    folder = tmp_path_factory.mktemp("bpe")
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_range_ratio_zero_draws_lengths_uniformly_from_one_to_l() -> None:
    lens = random_lens(np.random.RandomState(1), 100, 0.0, 2000)
    assert min(lens) >= 1 and max(lens) <= 100 and min(lens) < 10 and max(lens) > 90


def test_range_ratio_one_means_exactly_l() -> None:
    assert set(random_lens(np.random.RandomState(1), 128, 1.0, 50)) == {128}


def test_lengths_use_sglangs_formula_and_seed_order() -> None:
    expected = np.random.RandomState(7)
    want_in = expected.randint(max(int(64 * 0.5), 1), 65, size=5).tolist()
    want_out = expected.randint(max(int(16 * 0.5), 1), 17, size=5).tolist()
    prompts = build(DatasetSpec("random", 5, 64, 16, 0.5, seed=7), CHARS)
    assert [p.prompt_len for p in prompts] == want_in
    assert [p.output_len for p in prompts] == want_out


def test_range_ratio_outside_zero_one_is_a_usage_error() -> None:
    with pytest.raises(DsbenchUsageError, match=r"outside \[0, 1\].*sglang convention"):
        build(DatasetSpec("random", 2, 10, 10, 1.5), CHARS)


def test_the_same_seed_gives_the_same_prompts() -> None:
    a = build(DatasetSpec("random", 4, 50, 8, 0.0, seed=3), CHARS)
    b = build(DatasetSpec("random", 4, 50, 8, 0.0, seed=3), CHARS)
    c = build(DatasetSpec("random", 4, 50, 8, 0.0, seed=4), CHARS)
    assert a == b and a != c


@pytest.mark.parametrize("name", ["random", "fixed"])
def test_prompts_encode_to_exactly_their_declared_length_with_a_bpe_tokenizer(name: str, bpe_dir: Path) -> None:
    tok = HfTokenizer(bpe_dir)
    prompts = build(DatasetSpec(name, 20, 60, 8, 0.3, seed=5), tok)  # type: ignore[arg-type]
    for p in prompts:
        assert len(tok.encode(p.text)) == p.prompt_len


def test_random_ids_is_sglangs_construction_byte_for_byte(bpe_dir: Path) -> None:
    tok = HfTokenizer(bpe_dir)
    rng = np.random.RandomState(9)
    in_lens = [n - 1 for n in rng.randint(max(int(40 * 0.5), 1), 41, size=3)]  # minus the server's BOS
    out_lens = rng.randint(max(int(8 * 0.5), 1), 9, size=3).tolist()
    offsets = rng.randint(0, tok.vocab_size(), size=3)
    expected = [tok.decode([int((offsets[i] + i + j) % tok.vocab_size()) for j in range(in_lens[i])]) for i in range(3)]
    prompts = build(DatasetSpec("random-ids", 3, 40, 8, 0.5, seed=9), tok)
    assert [p.text for p in prompts] == expected
    assert [(p.prompt_len, p.output_len) for p in prompts] == list(zip(in_lens, out_lens, strict=True))


def test_batched_retokenization_counts_what_encode_counts(bpe_dir: Path) -> None:
    texts = ["r1 tok tok the model", "", "héllo wörld <bos> 日本語\n\n x", " " * 7]
    for tok in (HfTokenizer(bpe_dir), CharTokenizer()):
        assert encoded_lengths(tok, texts) == [len(tok.encode(t)) for t in texts]


def test_tokens_the_server_adds_are_taken_off_like_sglang(bpe_dir: Path) -> None:
    tok = HfTokenizer(bpe_dir)
    assert tok.num_special_tokens_to_add() == 1
    prompts = build(DatasetSpec("random", 3, 40, 8, 1.0), tok)
    assert [p.prompt_len for p in prompts] == [39, 39, 39]  # the server's BOS makes it 40


def test_fixed_prompts_are_distinct_so_no_prefix_cache_hits() -> None:
    prompts = build(DatasetSpec("fixed", 8, 32, 4, 0.0), CHARS)
    assert len({p.text[:8] for p in prompts}) == 8
    assert {p.prompt_len for p in prompts} == {32} and {p.output_len for p in prompts} == {4}


def sharegpt(tmp_path: Path, conversations: list[list[str]]) -> Path:
    path = tmp_path / "ShareGPT_V3_unfiltered_cleaned_split.json"
    data = [
        {
            "id": str(i),
            "conversations": [{"from": "human" if j % 2 == 0 else "gpt", "value": v} for j, v in enumerate(conv)],
        }
        for i, conv in enumerate(conversations)
    ]
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_sharegpt_uses_first_turns_and_their_lengths(tmp_path: Path) -> None:
    path = sharegpt(tmp_path, [["hello there", "general kenobi"], ["only one turn"], ["why?", "because it is"]])
    prompts = build(DatasetSpec("sharegpt", 2, dataset_path=path), CHARS)
    assert sorted((p.text, p.output_len) for p in prompts) == [("hello there", 14), ("why?", 13)]


def test_sharegpt_drops_conversations_over_the_context(tmp_path: Path) -> None:
    path = sharegpt(tmp_path, [["a" * 50, "b" * 50], ["short", "reply"]])
    with pytest.raises(DsbenchUsageError, match="only 1 usable conversations; 2 prompts"):
        build(DatasetSpec("sharegpt", 2, dataset_path=path, context_len=60), CHARS)


def test_random_prompts_draw_their_text_from_sharegpt_when_given(tmp_path: Path) -> None:
    path = sharegpt(tmp_path, [["zebra " * 10, "x y"], ["zebra zebra", "y z"]])
    prompts = build(DatasetSpec("random", 3, 30, 4, 1.0, dataset_path=path), CHARS)
    assert all(set(p.text) <= set("zebra ") for p in prompts)


def test_missing_sharegpt_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DsbenchUsageError, match=r"does not exist.*no download is attempted"):
        build(DatasetSpec("sharegpt", 2, dataset_path=tmp_path / "nope.json"), CHARS)


def test_unknown_tokenizer_folder_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DsbenchUsageError, match=r"not a local folder\. Pass --tokenizer PATH"):
        load_tokenizer(str(tmp_path / "missing"))


def test_char_tokenizer_counts_deepseek_special_tokens_as_one() -> None:
    assert len(CHARS.encode("ab</think>c")) == 4
    assert CHARS.decode(CHARS.encode("x<think>y")) == "x<think>y"


def test_infinite_rate_sends_everything_at_once() -> None:
    assert arrivals.schedule(5, math.inf) == [0.0] * 5


def test_poisson_arrivals_have_the_requested_mean_rate() -> None:
    offsets = arrivals.schedule(4001, 50.0, seed=2)
    assert offsets[0] == 0.0 and offsets == sorted(offsets)
    assert arrivals.offered_rate(offsets) == pytest.approx(50.0, rel=0.05)


def test_lower_burstiness_gives_burstier_gaps() -> None:
    poisson = np.diff(arrivals.schedule(3001, 20.0, 1.0, seed=1))
    bursty = np.diff(arrivals.schedule(3001, 20.0, 0.25, seed=1))
    assert np.mean(bursty) == pytest.approx(np.mean(poisson), rel=0.15)
    assert np.std(bursty) > 1.5 * np.std(poisson)


def test_bad_rate_or_burstiness_is_a_usage_error() -> None:
    with pytest.raises(DsbenchUsageError, match="request rate must be > 0"):
        arrivals.schedule(3, 0.0)
    with pytest.raises(DsbenchUsageError, match="burstiness must be > 0"):
        arrivals.schedule(3, 1.0, 0.0)


def test_random_prompts_without_sharegpt_differ_so_no_prefix_cache_hits() -> None:
    prompts = build(DatasetSpec("random", 300, 32, 4, 1.0), CHARS)
    assert len({p.text[:16] for p in prompts}) == 300
