"""The routing counter (engine-side recorder + shard files), its reader, the balance checks and the launch
settings. Each check is shown to FAIL on a violating histogram with a message that says expected vs actual."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_dsbench.engines.lmdeploy.eplb import SHIM_DIR
from pytest_dsbench.eplb import accuracy_skip_reason, runtime
from pytest_dsbench.eplb.counts import (
    CountsReport,
    LayerCounts,
    check_differs_from_control,
    check_expert_pattern,
    check_rank_balance,
    check_transform_applied,
    clear_counts,
    load_summary,
    read_counts,
    shard_path,
    wait_for_quiet_counts,
)
from pytest_dsbench.eplb.launch import eplb_launch_settings
from pytest_dsbench.eplb.runtime import EplbConfig, EplbPatchError, RoutingRecorder
from pytest_dsbench.eplb.transforms import balanced_topk_ids, reference_topk_ids

torch = pytest.importorskip("torch")


def recorder(
    tmp_path: Path, mode: str = "reference", ranks: int = 4, strict: bool = False
) -> RoutingRecorder:
    config = EplbConfig(mode=mode, ranks=ranks, counts_path=tmp_path / "counts.json", strict=strict)
    return RoutingRecorder("vllm", config, ranks, "linear")


def report(
    mode: str, counts: list[int], expected: list[int] | None, calls: int = 1, mismatched: int | None = 0
) -> CountsReport:
    layer = LayerCounts(
        layer=0,
        num_experts=len(counts),
        top_k=4,
        calls=calls,
        slots=sum(counts),
        max_call_slots=sum(counts),
        counts=counts,
        expected=expected,
        mismatched_slots=mismatched,
    )
    return CountsReport("vllm", mode, 4, "linear", {0: layer}, [], 0.0)


def test_recorder_round_trips_through_the_shard_file(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    ids = reference_topk_ids(torch.zeros(5, 4), 4, 16).to(torch.int32)
    rec.record(ids, layer=0, num_experts=16)
    rec.record(ids, layer=1, num_experts=16)
    rec.flush()
    assert shard_path(tmp_path / "counts.json", __import__("os").getpid()).is_file()
    got = read_counts(tmp_path / "counts.json")
    assert got.mode == "reference" and got.ranks == 4 and sorted(got.layers) == [0, 1]
    layer = got.layers[0]
    assert layer.counts == [5, 0, 0, 0] * 4 and layer.expected == layer.counts and layer.mismatched_slots == 0
    assert (
        check_transform_applied(got) == []
        and check_rank_balance(got) == []
        and check_expert_pattern(got) == []
    )


def test_recorder_counts_slots_that_differ_from_the_transform(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    rec.record(torch.arange(20).reshape(5, 4) % 16, layer=0, num_experts=16)
    rec.flush()
    problems = check_transform_applied(read_counts(tmp_path / "counts.json"))
    assert any("routed slots differ from the reference transform (expected 0)" in p for p in problems)
    assert any("!= reference transform's" in p for p in problems)


def test_strict_recorder_raises_inside_the_engine(tmp_path: Path) -> None:
    rec = recorder(tmp_path, strict=True)
    with pytest.raises(EplbPatchError, match="differ from the reference transform"):
        rec.record(torch.ones(2, 4, dtype=torch.int64), layer=0, num_experts=16)


def test_recorder_ignores_masked_padding_rows(tmp_path: Path) -> None:
    rec = recorder(tmp_path, mode="balanced")
    ids = balanced_topk_ids(torch.zeros(3, 4, dtype=torch.int32), 4, 16)
    ids[2] = -1
    rec.record(ids, layer=0, num_experts=16)
    snap = rec.snapshot()[0]
    assert snap["slots"] == 8 and snap["mismatched_slots"] == 0 and sum(snap["counts"]) == 8


def test_reader_merges_shards_and_subtracts_a_baseline(tmp_path: Path) -> None:
    path = tmp_path / "counts.json"
    payload = {
        "format": "dsbench-eplb-counts",
        "version": 1,
        "engine": "vllm",
        "mode": "observe",
        "ranks": 2,
        "placement": "linear",
        "pid": 1,
        "updated_unix": 1.0,
        "layers": [
            {
                "layer": 0,
                "num_experts": 4,
                "top_k": 2,
                "calls": 1,
                "slots": 4,
                "max_call_slots": 4,
                "counts": [1, 1, 1, 1],
                "expected": None,
                "mismatched_slots": None,
            }
        ],
    }
    for pid in (11, 12):
        shard_path(path, pid).write_text(json.dumps(payload))
    merged = read_counts(path)
    assert merged.layers[0].counts == [2, 2, 2, 2] and len(merged.shards) == 2
    delta = merged.minus(parse_one(payload))
    assert delta.layers[0].counts == [1, 1, 1, 1] and delta.layers[0].calls == 1
    clear_counts(path)
    with pytest.raises(FileNotFoundError, match="never recorded a routing call"):
        read_counts(path)


def parse_one(payload: dict[str, object]) -> CountsReport:
    from pytest_dsbench.eplb.counts import parse_counts

    return parse_counts(payload)


def test_reader_rejects_a_foreign_file(tmp_path: Path) -> None:
    shard_path(tmp_path / "c.json", 1).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a dsbench-eplb-counts v1 file"):
        read_counts(tmp_path / "c.json")


def test_wait_for_quiet_counts_returns_a_settled_report(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    rec.record(reference_topk_ids(torch.zeros(2, 4), 4, 16), layer=0, num_experts=16)
    rec.flush()
    got = wait_for_quiet_counts(tmp_path / "counts.json", settle_s=0.3, timeout_s=5)
    assert got.total_slots == 8


def test_rank_balance_check_fails_with_expected_and_actual() -> None:
    problems = check_rank_balance(report("observe", [9, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0], None))
    assert problems == [
        "layer 0: per-rank load [9, 1, 1, 1] has max-min 8 (max/mean 3.000); expected max-min <= 1 "
        "(1 forward calls x 1)"
    ]


def test_expert_pattern_check_fails_when_reference_touches_other_experts() -> None:
    problems = check_expert_pattern(
        report("reference", [1, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0], None)
    )
    assert problems == ["layer 0: reference should use exactly experts [0, 4, 8, 12], used [0, 1, 4, 8, 12]"]


def test_expert_pattern_check_fails_when_balanced_leaves_experts_idle() -> None:
    problems = check_expert_pattern(report("balanced", [4, 0, 0, 0] * 4, None))
    assert problems and "balanced should use 16 experts, used 4" in problems[0]


def test_negative_control_check_fails_when_patch_changed_nothing() -> None:
    same = [3, 1, 0, 0, 2, 2, 0, 0, 1, 1, 1, 1, 0, 0, 0, 4]
    problems = check_differs_from_control(report("reference", same, same), report("observe", same, None))
    assert problems and "equals the unpatched control's" in problems[0]
    better = report("reference", [4, 0, 0, 0] * 4, [4, 0, 0, 0] * 4)
    assert check_differs_from_control(better, report("observe", same, None)) == []


def test_load_summary_gives_per_rank_and_per_expert_max_over_mean() -> None:
    summary = load_summary(report("observe", [8, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0], None))
    assert summary["per_rank"]["max_over_mean"] == 2.0
    assert summary["per_expert_worst_layer"]["max_over_mean"] == 8.0
    assert summary["layers"]["0"]["per_rank"]["max"] == 8


def test_config_from_env_validates_each_variable() -> None:
    assert EplbConfig.from_env({}).mode == "off"
    cfg = EplbConfig.from_env(
        {
            "DSBENCH_EPLB_MODE": "Balanced",
            "DSBENCH_EPLB_RANKS": "4",
            "DSBENCH_EPLB_COUNTS_PATH": "/tmp/x.json",
            "DSBENCH_EPLB_STRICT": "1",
        }
    )
    assert (cfg.mode, cfg.ranks, cfg.counts_path, cfg.strict) == ("balanced", 4, Path("/tmp/x.json"), True)
    with pytest.raises(EplbPatchError, match="DSBENCH_EPLB_MODE='fast' is not one of"):
        EplbConfig.from_env({"DSBENCH_EPLB_MODE": "fast"})
    with pytest.raises(EplbPatchError, match="DSBENCH_EPLB_RANKS='0' must be a positive integer"):
        EplbConfig.from_env({"DSBENCH_EPLB_MODE": "reference", "DSBENCH_EPLB_RANKS": "0"})
    with pytest.raises(EplbPatchError, match="DSBENCH_EPLB_PLACEMENT='zigzag'"):
        EplbConfig.from_env({"DSBENCH_EPLB_PLACEMENT": "zigzag"})


def test_ops_without_a_recorder_fail_loudly() -> None:
    runtime.ensure_ops()
    saved = runtime._ACTIVE
    runtime.set_active_recorder(None)
    try:
        with pytest.raises(EplbPatchError, match="no recorder is installed"):
            torch.ops.dsbench_eplb.route(torch.zeros(2, 3), 2, 4, torch.int32)
    finally:
        runtime._ACTIVE = saved


def test_route_op_is_opaque_to_torch_compile(tmp_path: Path) -> None:
    runtime.ensure_ops()
    saved = runtime._ACTIVE
    runtime.set_active_recorder(recorder(tmp_path, ranks=3))
    try:
        fn = torch.compile(
            lambda h: torch.ops.dsbench_eplb.route(h, 4, 12, torch.int32) + 0, fullgraph=True, backend="eager"
        )
        got = fn(torch.zeros(5, 7))
        assert torch.equal(got, reference_topk_ids(torch.zeros(5, 4), 3, 12).to(torch.int32))
    finally:
        runtime._ACTIVE = saved


# --------------------------------------------------------------------------------------------- launch


def test_launch_settings_for_vllm_select_the_strategy(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    shard_path(path, 99).write_text("stale")
    env, args = eplb_launch_settings("vllm", "reference", 4, path, base_env={})
    assert env == {
        "DSBENCH_EPLB_MODE": "reference",
        "DSBENCH_EPLB_COUNTS_PATH": str(path.resolve()),
        "DSBENCH_EPLB_RANKS": "4",
        "VLLM_MOE_ROUTING_SIMULATION_STRATEGY": "dsbench_eplb_reference",
    }
    assert args == [] and not shard_path(path, 99).exists()


def test_launch_settings_extend_plugin_allowlists_only_when_set(tmp_path: Path) -> None:
    env, _ = eplb_launch_settings(
        "vllm", "observe", None, tmp_path / "c.json", base_env={"VLLM_PLUGINS": "other"}
    )
    assert env["VLLM_PLUGINS"] == "other,dsbench_eplb" and "VLLM_MOE_ROUTING_SIMULATION_STRATEGY" not in env
    env, _ = eplb_launch_settings("sglang", "balanced", None, tmp_path / "c.json", base_env={})
    assert "SGLANG_PLUGINS" not in env and "DSBENCH_EPLB_RANKS" not in env
    env, _ = eplb_launch_settings(
        "sglang", "balanced", 8, tmp_path / "c.json", base_env={"SGLANG_PLUGINS": "a"}
    )
    assert env["SGLANG_PLUGINS"] == "a,dsbench_eplb"


def test_launch_settings_for_lmdeploy_prepend_the_shim(tmp_path: Path) -> None:
    env, _ = eplb_launch_settings(
        "lmdeploy", "balanced", 2, tmp_path / "c.json", base_env={"PYTHONPATH": "/x"}
    )
    assert env["PYTHONPATH"].split(":") == [str(SHIM_DIR), "/x"]
    assert (SHIM_DIR / "sitecustomize.py").is_file()


def test_launch_settings_reject_bad_values(tmp_path: Path) -> None:
    assert eplb_launch_settings("vllm", "off", None, tmp_path / "c.json") == ({}, [])
    with pytest.raises(ValueError, match="unknown engine 'tgi'"):
        eplb_launch_settings("tgi", "reference", None, tmp_path / "c.json")
    with pytest.raises(ValueError, match="unknown EPLB mode 'fast'"):
        eplb_launch_settings("vllm", "fast", None, tmp_path / "c.json")


def test_accuracy_is_skipped_while_a_routing_patch_is_active() -> None:
    assert accuracy_skip_reason("off") is None and accuracy_skip_reason("observe") is None
    reason = accuracy_skip_reason("reference")
    assert reason is not None and "model outputs are meaningless" in reason


MODEL_DEPENDENT = """
import pytest

@pytest.mark.accuracy
def test_accuracy():
    pass

@pytest.mark.fixture_model
def test_reference_answers():
    pass
"""


@pytest.mark.parametrize(("mode", "skipped"), [("reference", 2), ("balanced", 2), ("observe", 0), ("off", 0)])
def test_model_dependent_tests_are_skipped_only_under_a_routing_patch(
    pytester: pytest.Pytester, mode: str, skipped: int
) -> None:
    pytester.makepyfile(MODEL_DEPENDENT)
    result = pytester.runpytest("--eplb", mode, "-rs")
    result.assert_outcomes(passed=2 - skipped, skipped=skipped)
    if skipped:
        result.stdout.fnmatch_lines([f"*EPLB routing patch '{mode}' is active*"])
