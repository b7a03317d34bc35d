"""The module benchmarks end to end at CI scale (inner pytest runs of tests/modules): results land in the history,
the regression gate flags a slowed module, the scale is chosen by the device, FP8 and GPU variants skip with the
reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_dsbench.modules import fp8

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="these runs check the CPU (ci-scale) path")

MODULES = Path(__file__).resolve().parents[1] / "modules" / "test_modules.py"
ONE_EXPERT = "test_routed_expert[bf16-tokens=1]"
SLOWDOWN = '''
import importlib
import time

# the module object the inner run imports (pytester drops modules between inner runs: no stale package attribute)
impl = importlib.import_module("pytest_dsbench.modules.impl")
_call = impl.Mlp.__call__

def _slow(self, x):
    time.sleep(0.05)
    return _call(self, x)

def pytest_configure(config):
    impl.Mlp.__call__ = _slow

def pytest_unconfigure(config):
    impl.Mlp.__call__ = _call
'''
"""An injected slowdown: every MLP call (an expert is one) sleeps 50 ms first."""


def _run(pytester: pytest.Pytester, tests: str, *args: str) -> pytest.RunResult:
    """An inner run of the module tests named in ``tests`` (space-separated, ``name[params]``)."""
    return pytester.runpytest(
        *(f"{MODULES}::{test}" for test in tests.split()), "-m", "modules",
        "--dsbench-storage", str(pytester.path / "history"),
        "--dsbench-artifacts", str(pytester.path / "artifacts"), "-p", "no:cacheprovider", "-rs", *args,
    )


def _stored(pytester: pytest.Pytester) -> list[dict[str, object]]:
    files = sorted((pytester.path / "history").rglob("*.json"))
    assert files, "no run was stored"
    return [b["extra_info"]["dsbench"] for b in json.loads(files[-1].read_text())["benchmarks"]]


def test_module_results_land_in_the_history_with_their_rounds_as_samples(pytester: pytest.Pytester) -> None:
    result = _run(pytester, ONE_EXPERT)
    result.assert_outcomes(passed=1)
    stored = {e["metric"]: e for e in _stored(pytester)}
    time = stored["module_time_ms_median"]
    assert time["workload"] == {"module": "expert", "variant": "one", "dtype": "bf16", "tokens": 1, "scale": "ci",
                                "device": "cpu", "kernels": "torch"}
    assert time["has_samples"] and time["sample_count"] == 10
    assert {"module_bandwidth_gb_s", "module_tflop_s", "module_roofline_fraction"} <= set(stored)
    result.stdout.fnmatch_lines(["expert [[]one, bf16, torch reference[]]", "| tokens | time (ms) | GB/s *"])


def test_the_regression_gate_flags_a_slowed_module_and_passes_an_unchanged_one(pytester: pytest.Pytester) -> None:
    _run(pytester, ONE_EXPERT).assert_outcomes(passed=1)
    gate = ("--dsbench-compare", "latest", "--dsbench-regress", "module_time_ms_median:1000")
    _run(pytester, ONE_EXPERT, *gate).assert_outcomes(passed=1)
    pytester.makepyfile(slowdown=SLOWDOWN)
    pytester.syspathinsert()
    slowed = _run(pytester, ONE_EXPERT, *gate, "-p", "slowdown")
    slowed.assert_outcomes(failed=1)
    slowed.stdout.fnmatch_lines(["*module_time_ms_median regressed against run *expected at most 1000% worse*",
                                 "*REGRESSED*"])


def test_the_scale_is_chosen_by_the_device_and_named_in_the_header(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "test_lm_head", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_lm_head?tokens=1?", "*test_lm_head?tokens=256?"])
    header = _run(pytester, "test_lm_head[tokens=1]", "--dsbench-modules-scale", "ci", "--collect-only")
    header.stdout.fnmatch_lines(["dsbench modules: scale ci (--dsbench-modules-scale), token counts [[]1, 4, *"])


def test_an_unknown_scale_names_the_valid_ones(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSBENCH_MODULES_SCALE", "huge")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: unknown dsbench-modules-scale 'huge'. Valid values: auto, full, ci."])


def test_fp8_and_gpu_variants_skip_with_the_reason_on_a_cpu(pytester: pytest.Pytester) -> None:
    result = _run(pytester, "test_routed_expert[fp8-tokens=1] test_embed_tokens[test_gpu-tokens=1]")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines([
        "SKIPPED * block-FP8 kernels need CUDA (vLLM's Triton w8a8 block-FP8 matmul and fused MoE); this run's "
        "device is cpu",
        "SKIPPED * embed_tokens test_gpu needs a CUDA device; this run has none (the device is cpu)",
    ])


def test_fp8_reason_names_the_device() -> None:
    reason = fp8.unavailable_reason(torch.device("cpu"))
    assert reason is not None and "need CUDA" in reason and "device is cpu" in reason
