"""The seeds' evaluation methods, parametrised by the ``[throughput.*]`` entries of ``thresholds/<hw>.toml``.

* DeepLink (seed 000): output token throughput of the random workload against the entry's floor.
* ali decode (seed 003): mean TPOT per batch size and the server-logged decode throughput per running batch
size
  (needs the engine log: the suite's own in start mode, ``--engine-log`` in attach mode).
* ali prefill (seed 003): input token throughput per accelerator at each input length.
* tencent (seed 003): the fixed 128/128/128 run (mean TPOT within the SLO, total tok/s and QPM floors) and the
  search for the largest concurrency that keeps mean TPOT within the SLO.

Results are also written in the seeds' own formats under ``<artifacts>/load/methods/``. Each method's load
runs happen in a fixture, so a run whose client was the bottleneck (INVALID) errors the test, as in the SLO
tests, and is never judged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.gate import Gate
from pytest_dsbench.load.api import LoadContext, baseline_params, record_run_health, record_run_metric
from pytest_dsbench.load.runner import LoadRun
from pytest_dsbench.methods import ali, deeplink, tencent
from pytest_dsbench.metrics import metric_samples
from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.run import DsbenchRun
from pytest_dsbench.thresholds import HardwareProfile

pytestmark = pytest.mark.throughput

ENTRIES = {
    "deeplink_entry": "deeplink",
    "ali_decode_entry": "ali_decode",
    "ali_prefill_entry": "ali_prefill",
    "tencent_entry": "tencent",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    run = DsbenchRun.of(metafunc.config)
    for argname, method in ENTRIES.items():
        if argname in metafunc.fixturenames:
            metafunc.parametrize(argname, baseline_params(run.hw, run.options.engine, method))


@pytest.fixture(scope="module")
def load_ctx(dsbench_engine: EngineInfo, dsbench_options: DsbenchOptions, hw_profile: HardwareProfile) -> LoadContext:
    return LoadContext(dsbench_engine, dsbench_options, hw_profile)


def _source(profile: HardwareProfile, name: str, key: str) -> str:
    return profile.where(f"[throughput.{name}] {key}")


def _record_health(gate: Gate, profile: HardwareProfile, run: LoadRun, name: str) -> None:
    record_run_health(gate, run, profile.slo.error_rate_max, _source(profile, name, "/ [slo] error_rate_max"))


# -- the runs (set-up) ----------------------------------------------------------------------------------------
@pytest.fixture
def deeplink_result(deeplink_entry: tuple[str, Any], load_ctx: LoadContext) -> deeplink.DeeplinkResult:
    name, entry = deeplink_entry
    return deeplink.run(load_ctx, name, entry)


@pytest.fixture
def engine_logs(dsbench_engine: EngineInfo) -> list[Path]:
    logs = [p for p in dsbench_engine.log_paths if p.is_file()]
    if not logs:
        pytest.skip("ali decode reads the engine's log: pass --engine-log PATH in attach mode")
    return logs


@pytest.fixture
def ali_decode_result(
    ali_decode_entry: tuple[str, Any], load_ctx: LoadContext, dsbench_engine: EngineInfo, engine_logs: list[Path]
) -> ali.AliDecodeResult:
    return ali.run_decode(
        load_ctx, ali_decode_entry[1], engine_logs, log_format=dsbench_engine.behaviour.decode_log_format
    )


@pytest.fixture
def ali_prefill_result(ali_prefill_entry: tuple[str, Any], load_ctx: LoadContext) -> ali.AliPrefillResult:
    return ali.run_prefill(load_ctx, ali_prefill_entry[1])


@pytest.fixture
def tencent_result(tencent_entry: tuple[str, Any], load_ctx: LoadContext) -> tencent.TencentResult:
    name, entry = tencent_entry
    return tencent.run_fixed(load_ctx, name, entry)


@pytest.fixture
def tencent_search(
    tencent_entry: tuple[str, Any], load_ctx: LoadContext, hw_profile: HardwareProfile
) -> tencent.SearchResult:
    name, entry = tencent_entry
    slo = hw_profile.slo
    return tencent.run_search(load_ctx, name, entry, limit_ms=slo.tpot_ms_mean_max, error_rate_max=slo.error_rate_max)


# -- the verdicts ---------------------------------------------------------------------------------------------
def test_deeplink_output_throughput(
    deeplink_entry: tuple[str, Any], deeplink_result: deeplink.DeeplinkResult,
    hw_profile: HardwareProfile, dsbench_gate: Gate,
) -> None:
    name, entry = deeplink_entry
    run = deeplink_result.run
    source = _source(hw_profile, name, "output_tok_s_min")
    record_run_metric(
        dsbench_gate, run, "output_tok_s", entry.output_tok_s_min, source, value=deeplink_result.output_tok_s
    )
    _record_health(dsbench_gate, hw_profile, run, name)
    dsbench_gate.check()


def test_ali_decode_tpot_and_logged_throughput(
    ali_decode_entry: tuple[str, Any],
    ali_decode_result: ali.AliDecodeResult,
    engine_logs: list[Path],
    dsbench_engine: EngineInfo,
    hw_profile: HardwareProfile,
    dsbench_gate: Gate,
) -> None:
    name = ali_decode_entry[0]
    result = ali_decode_result
    for size, run in result.runs.items():
        dsbench_gate.record(
            "tpot_ms_mean",
            result.tpot_ms[size],
            samples=metric_samples(run.summary, "tpot_ms_mean"),
            workload={**run.workload, "batch_size": size},
        )
        _record_health(dsbench_gate, hw_profile, run, name)
    for size, row in result.table.items():
        dsbench_gate.record(
            "decode_tok_s_per_device",
            row["throughput_per_gpu"],
            sample_count=int(row[ali.SAMPLES_KEY]),
            workload={"running_batch_size": size},
        )
    if not result.samples:
        dsbench_gate.fail(
            f"no decode-throughput line in {', '.join(map(str, engine_logs))} while the ali decode runs ran "
            f"(expected {dsbench_engine.behaviour.decode_log_format}-format lines such as SGLang "
            "'Decode batch ... gen throughput' or vLLM/LMDeploy 'Avg generation throughput'; vLLM logs "
            "every VLLM_LOG_STATS_INTERVAL s and not with --disable-log-stats)"
        )
    dsbench_gate.check()


def test_ali_prefill_input_throughput_per_device(
    ali_prefill_entry: tuple[str, Any],
    ali_prefill_result: ali.AliPrefillResult,
    hw_profile: HardwareProfile,
    dsbench_gate: Gate,
) -> None:
    name, entry = ali_prefill_entry
    for length, value in ali_prefill_result.input_tok_s_per_device.items():
        run = ali_prefill_result.runs[length]
        dsbench_gate.record(
            "input_tok_s_per_device",
            value,
            sample_count=run.summary.completed,
            limit=entry.input_tok_s_per_device_min,
            limit_source=_source(hw_profile, name, "input_tok_s_per_device_min"),
            workload={**run.workload, "input_len": length},
        )
        _record_health(dsbench_gate, hw_profile, run, name)
    dsbench_gate.check()


def test_tencent_throughput_with_tpot_within_slo(
    tencent_entry: tuple[str, Any], tencent_result: tencent.TencentResult,
    hw_profile: HardwareProfile, dsbench_gate: Gate,
) -> None:
    name, entry = tencent_entry
    run = tencent_result.run
    tpot_source = f"{_source(hw_profile, name, '')}/ [slo] tpot_ms_mean_max"
    record_run_metric(dsbench_gate, run, "tpot_ms_mean", hw_profile.slo.tpot_ms_mean_max, tpot_source)
    record_run_metric(
        dsbench_gate, run, "total_tok_s", entry.total_tok_s_min, _source(hw_profile, name, "total_tok_s_min")
    )
    record_run_metric(dsbench_gate, run, "qpm", entry.qpm_min, _source(hw_profile, name, "qpm_min"))
    _record_health(dsbench_gate, hw_profile, run, name)
    assert tencent_result.files["json"].is_file()
    dsbench_gate.check()


def test_tencent_largest_concurrency_within_tpot_slo(
    tencent_entry: tuple[str, Any], tencent_search: tencent.SearchResult,
    hw_profile: HardwareProfile, dsbench_gate: Gate,
) -> None:
    name = tencent_entry[0]
    result = tencent_search
    limit = hw_profile.slo.tpot_ms_mean_max
    history = ", ".join(
        f"c={p.concurrency}: {p.value:.2f} ms ({p.samples} req){'' if p.passed else ' FAIL'}" for p in result.probes
    )
    dsbench_gate.record(
        "max_concurrency_under_slo",
        float(result.best or 0),
        sample_count=len(result.probes),
        workload={
            "method": "tencent",
            "entry": name,
            "statistic": "tpot_ms_mean",
            "limit_ms": limit,
            "range": [result.low, result.high],
            "stopped": result.stopped,
        },
    )
    if result.best is None:
        dsbench_gate.fail(
            f"no concurrency in [{result.low}, {result.high}] keeps tpot_ms_mean <= {limit:g} ms "
            f"({result.stopped}; probes: {history})"
        )
    dsbench_gate.check()
