"""EPLB patch equivalence on a live engine (run with ``--eplb reference`` or ``--eplb balanced``).

The suite launched the engine with its routing patch (:mod:`pytest_dsbench.eplb.launch`, each engine's hook in
``pytest_dsbench/engines/<name>/eplb.py``). The patch keeps a
per-layer histogram of the expert ids the engine actually hands to its expert kernels, plus the histogram the
claimed transform predicts (the only channel that works on every engine: vLLM's CPU build cannot start with
``--enable-return-routed-experts``). Under a fixed load these checks require:

* every routed slot equals the transform the patch claims (0 mismatches, identical histograms);
* per-rank load is balanced (a rank-first deal: max - min <= 1 slot per forward call) and the expert pattern
  is the mode's (reference: exactly R experts; balanced: every expert);
* (slow) a control engine launched without the transform (``observe`` mode: it only counts) shows the model's
  own routing, which the same checks reject; the other transform mode is exact too; and an engine whose patch
  cannot take effect refuses to start instead of silently serving unpatched routing.

The embedded engine runs one process (EP=1): the patch simulates ``--eplb-ranks`` ranks (default 4) by folding
expert ids onto ranks with the engine's placement (vLLM: linear blocks).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from pytest_dsbench._http import auth_headers
from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.engines.launch import EplbLaunch, launch_engine
from pytest_dsbench.engines.launcher import EngineProcess, log_tail
from pytest_dsbench.eplb.counts import (
    CountsReport,
    assert_no_problems,
    check_differs_from_control,
    check_expert_pattern,
    check_rank_balance,
    check_transform_applied,
    load_summary,
    wait_for_quiet_counts,
)
from pytest_dsbench.errors import EngineStartError
from pytest_dsbench.results import MetricResult, RunResults
from pytest_dsbench.run import DsbenchRun
from pytest_dsbench.session import has_gpu

pytestmark = pytest.mark.eplb

TRANSFORMS = ("reference", "balanced")
PROMPTS = [f"Question {i}: what is {i} plus {2 * i}? Answer briefly." for i in range(8)]
MAX_TOKENS = 12
CONCURRENCY = 4


def drive_load(base_url: str, model: str, api_key: str | None, timeout_s: float = 120.0) -> int:
    """Fixed prompts, greedy, ``ignore_eos``: the same load for patched and control runs. Returns tokens."""

    def one(prompt: str) -> int:
        with httpx.Client(base_url=base_url, timeout=timeout_s, headers=auth_headers(api_key)) as client:
            response = client.post(
                "/v1/completions",
                json={
                    "model": model,
                    "prompt": prompt,
                    "max_tokens": MAX_TOKENS,
                    "temperature": 0.0,
                    "ignore_eos": True,
                },
            )
            response.raise_for_status()
            return int(response.json()["usage"]["completion_tokens"])

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return sum(pool.map(one, PROMPTS))


def counted(path: Path) -> CountsReport | None:
    """The settled counter so far, or None before the engine recorded anything."""
    try:
        return wait_for_quiet_counts(path, settle_s=1.5, timeout_s=20.0)
    except FileNotFoundError:
        return None


def patch_lines(log_path: Path | None) -> str:
    """The engine log lines that explain a routing-patch failure (our own lines and routing errors)."""
    if log_path is None:
        return ""
    keys = ("dsbench", "routing strategy", "EplbPatchError", "Error")
    lines = [line for line in log_tail(log_path, 400).splitlines() if any(k in line for k in keys)]
    return "\n".join(lines[-12:])


def measure(
    base_url: str, model: str, api_key: str | None, counts_path: Path, log_path: Path | None = None
) -> CountsReport:
    """Counter delta over one fixed load (the warm-up/profile forward is excluded)."""
    before = counted(counts_path)
    try:
        drive_load(base_url, model, api_key)
    except httpx.HTTPError as exc:
        pytest.fail(
            f"the engine failed the fixed load under its EPLB routing patch ({exc}); is pytest-dsbench's "
            f"engine plugin installed in the engine's environment? Engine log ({log_path}):\n"
            f"{patch_lines(log_path)}",
            pytrace=False,
        )
    after = counted(counts_path)
    if after is None:
        pytest.fail(
            f"the engine served the load but its EPLB patch wrote no counter to {counts_path}: the patch "
            "was not installed or this MoE backend never called the patched router",
            pytrace=False,
        )
    return after.minus(before)


@pytest.fixture(scope="module")
def patched(dsbench_engine: EngineInfo) -> CountsReport:
    if dsbench_engine.eplb_mode not in TRANSFORMS or dsbench_engine.eplb_counts_path is None:
        pytest.skip(
            "the live EPLB check needs the suite to launch the engine with a routing patch: "
            "run with --eplb reference or --eplb balanced"
        )
    log_path = dsbench_engine.log_paths[0] if dsbench_engine.log_paths else None
    return measure(
        dsbench_engine.base_url,
        dsbench_engine.model,
        dsbench_engine.api_key,
        dsbench_engine.eplb_counts_path,
        log_path,
    )


def test_engine_routes_exactly_the_claimed_transform(
    patched: CountsReport, dsbench_engine: EngineInfo
) -> None:
    assert patched.mode == dsbench_engine.eplb_mode, (
        f"counter reports mode {patched.mode!r}, the suite launched {dsbench_engine.eplb_mode!r}"
    )
    if dsbench_engine.eplb_ranks is not None:
        assert patched.ranks == dsbench_engine.eplb_ranks, (
            f"patch balances over {patched.ranks} ranks, expected {dsbench_engine.eplb_ranks}"
        )
    assert patched.total_slots > 0, "no routed slot was recorded during the load"
    assert_no_problems(
        check_transform_applied(patched), f"routed experts differ from the {patched.mode} transform"
    )


def record_load(results: RunResults, test_id: str, report: CountsReport, prefix: str = "eplb") -> None:
    """Per-rank and worst-layer per-expert load (max/mean) into the run's results table."""
    summary = load_summary(report)
    for metric, stats in (
        (f"{prefix}_rank_load_max_over_mean", summary["per_rank"]),
        (f"{prefix}_expert_load_max_over_mean", summary["per_expert_worst_layer"]),
    ):
        results.record(
            MetricResult(
                test_id=test_id,
                metric=metric,
                unit="ratio",
                value=float(stats["max_over_mean"]),
                samples=report.total_slots,
                source=f"dsbench EPLB counter ({report.mode}, {report.ranks} ranks)",
                extra={"load": summary},
            )
        )


def test_patched_routing_is_balanced_across_ranks(
    patched: CountsReport, dsbench_results: RunResults, dsbench_test_id: str
) -> None:
    record_load(dsbench_results, dsbench_test_id, patched)
    assert_no_problems(
        check_rank_balance(patched) + check_expert_pattern(patched),
        f"{patched.mode} routing is not balanced across {patched.ranks} ranks",
    )


# ------------------------------------------------------------------------------ extra engines (slow)


def launch_variant(
    config: pytest.Config,
    engine: EngineInfo,
    mode: str,
    folder: Path,
    extra_env: dict[str, str] | None = None,
    drop_env: tuple[str, ...] = (),
) -> EngineProcess:
    """Launch another copy of the session's engine with routing patch ``mode`` (same model, profile, options
    and launch function); the process is started, not yet healthy."""
    session = DsbenchRun.of(config).engine
    if engine.mode != "start":
        pytest.skip("extra EPLB engines can only be launched when the suite launched the engine itself")
    opts = session.options
    # empty, not absent: the server inherits os.environ under this mapping
    overrides = {**(extra_env or {}), **dict.fromkeys(drop_env, "")}
    return launch_engine(
        opts.engine,
        session.hw,
        model=engine.model_path or str(opts.model),
        served_model_name=engine.model,
        log_path=folder / f"engine-{mode}.log",
        on_cpu=not has_gpu(),
        python=opts.engine_python,
        host=opts.engine_host,
        engine_args=opts.engine_args,
        engine_env=opts.engine_env,
        api_key=opts.api_key,
        eplb=EplbLaunch(mode=mode, ranks=engine.eplb_ranks, counts_path=folder / "counts.json"),
        env_overrides=overrides,
    )


@pytest.fixture(scope="module")
def variant_runs(
    request: pytest.FixtureRequest,
    dsbench_engine: EngineInfo,
    patched: CountsReport,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, CountsReport]]:
    """Counter deltas of the same load on a control engine (``observe``) and on the other transform mode."""
    timeout_s = DsbenchRun.of(request.config).options.engine_startup_timeout_s
    other = "balanced" if dsbench_engine.eplb_mode == "reference" else "reference"
    runs: dict[str, CountsReport] = {}
    for mode in ("observe", other):
        folder = tmp_path_factory.mktemp(f"eplb-{mode}")
        process = launch_variant(request.config, dsbench_engine, mode, folder)
        try:
            process.wait_healthy(timeout_s)
            runs[mode] = measure(
                process.base_url,
                dsbench_engine.model,
                dsbench_engine.api_key,
                folder / "counts.json",
                process.log_path,
            )
        finally:
            process.stop()
    yield runs


@pytest.mark.slow
def test_control_without_the_patch_shows_the_models_own_routing(
    patched: CountsReport,
    variant_runs: dict[str, CountsReport],
    dsbench_results: RunResults,
    dsbench_test_id: str,
) -> None:
    control = variant_runs["observe"]
    record_load(dsbench_results, dsbench_test_id, control, prefix="eplb_control")
    assert control.mode == "observe" and sorted(control.layers) == sorted(patched.layers), (
        f"control recorded layers {sorted(control.layers)}, the patched engine {sorted(patched.layers)}"
    )
    assert_no_problems(check_differs_from_control(patched, control), "patched vs unpatched control")
    as_if_patched = dataclasses.replace(control, mode=patched.mode)
    problems = check_expert_pattern(as_if_patched) + check_rank_balance(as_if_patched, max_spread_per_call=0)
    assert problems, (
        "the model's own routing passes the checks for the patched mode: the live check could not "
        "tell a patch that silently did nothing from a working one"
    )


@pytest.mark.slow
def test_the_other_transform_mode_is_exact_and_balanced(
    variant_runs: dict[str, CountsReport], dsbench_results: RunResults, dsbench_test_id: str
) -> None:
    ((mode, run),) = [(m, r) for m, r in variant_runs.items() if m != "observe"]
    record_load(dsbench_results, dsbench_test_id, run, prefix=f"eplb_{mode}")
    assert run.mode == mode
    assert_no_problems(
        check_transform_applied(run) + check_rank_balance(run) + check_expert_pattern(run),
        f"{mode} patch on a second engine",
    )


@pytest.mark.slow
def test_a_patch_that_cannot_take_effect_stops_the_engine(
    request: pytest.FixtureRequest, dsbench_engine: EngineInfo, patched: CountsReport, tmp_path: Path
) -> None:
    """A transform mode without the engine-side switch (vLLM: the simulation strategy) must not serve."""
    if dsbench_engine.name != "vllm":
        pytest.skip("the switch-missing scenario is specific to vLLM's routing-simulation strategy")
    process = launch_variant(
        request.config,
        dsbench_engine,
        patched.mode,
        tmp_path,
        drop_env=("VLLM_MOE_ROUTING_SIMULATION_STRATEGY",),
    )
    try:
        with pytest.raises(EngineStartError):
            process.wait_healthy(300.0)
    finally:
        process.stop()
    assert "needs VLLM_MOE_ROUTING_SIMULATION_STRATEGY" in log_tail(process.log_path, 400)
