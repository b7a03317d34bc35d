"""MTP speculative decoding on a real engine: vLLM's CPU build serving the fixture model with an MTP layer.

Seed 004 deploys DeepSeek-R1 on tp32 with MTP (``deepseek_mtp``, one speculative token). On a GPU deployment the
SLO tests gate it (``--hw va16/tp32-mtp``: the acceptance rate and mean acceptance length from the engine's
spec-decode counters, ``[slo] spec_decode_acceptance_*_min`` and ``[regress_pct]``). This test runs the same
mechanics for real on the embedded engine: it launches a second vLLM serving a variant of ``fixtures/tiny-r1``
with one random-initialised MTP layer (:mod:`pytest_dsbench.testing.mtp_variant`) with the profile's deployment
switched to ``mtp = true``, loads it with this suite's client, and checks that the counters the suite reads are
there and agree with each other and with the client. The layer is untrained, so the acceptance is low: it is
recorded (history, regression gate), not held to a floor.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.engines.launch import launch_engine
from pytest_dsbench.gate import Gate
from pytest_dsbench.load.api import LoadContext, record_server_metrics, run_workload
from pytest_dsbench.load.datasets import DatasetSpec
from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.run import DsbenchRun
from pytest_dsbench.session import embedded_model_dir, has_gpu
from pytest_dsbench.thresholds import HardwareProfile

pytestmark = [pytest.mark.slo, pytest.mark.slow]

LOAD = DatasetSpec(name="random", num_prompts=8, input_len=64, output_len=32, range_ratio=1.0, seed=7)


def test_embedded_mtp_engine_reports_speculative_decoding_acceptance(
    request: pytest.FixtureRequest,
    dsbench_engine: EngineInfo,
    dsbench_options: DsbenchOptions,
    hw_profile: HardwareProfile,
    dsbench_gate: Gate,
    tmp_path: Path,
) -> None:
    if dsbench_engine.mode != "start" or dsbench_engine.name != "vllm" or dsbench_options.model is not None:
        pytest.skip("needs the embedded engine (vLLM's CPU build serving fixtures/tiny-r1, launched by the suite)")
    from pytest_dsbench.testing.mtp_variant import write_mtp_variant

    model = write_mtp_variant(embedded_model_dir(), tmp_path / "tiny-r1-mtp")
    mtp_profile = hw_profile.model_copy(update={"deployment": hw_profile.deployment.model_copy(update={"mtp": True})})
    process = launch_engine(
        "vllm", mtp_profile, model=str(model), served_model_name=dsbench_engine.model,
        log_path=tmp_path / "engine-vllm-mtp.log", on_cpu=not has_gpu(), python=dsbench_options.engine_python,
        engine_args=dsbench_options.engine_args, engine_env=dsbench_options.engine_env,
        api_key=dsbench_options.api_key,
    )
    try:
        process.wait_healthy(DsbenchRun.of(request.config).options.engine_startup_timeout_s)
        engine = dataclasses.replace(dsbench_engine, base_url=process.base_url, model_path=str(model),
                                     tokenizer_path=str(model), launch_command=tuple(process.command))
        run = run_workload(LoadContext(engine, dsbench_options, mtp_profile), LOAD, name="mtp-embedded",
                           max_concurrency=4)
    finally:
        process.stop()
    report = run.server_metrics
    assert report is not None and report.available, f"no server metrics from the MTP engine: {report}"
    recorded = record_server_metrics(
        dsbench_gate, run, hw_profile.slo_limit, only=["spec_decode_acceptance_rate", "spec_decode_acceptance_length"]
    )
    summary = report.summary()
    drafts, draft_tokens = report.increase("spec_drafts"), report.increase("spec_draft_tokens")
    accepted, generated = report.increase("spec_accepted_tokens"), report.increase("generation_tokens")
    assert recorded == ["spec_decode_acceptance_rate", "spec_decode_acceptance_length"], (
        f"expected vLLM's spec-decode counters in /metrics, got {sorted(report.series[-1].values)}")
    assert drafts and draft_tokens == drafts, f"one speculative token per draft: {draft_tokens} tokens, {drafts} drafts"
    assert accepted is not None and 0 <= accepted <= draft_tokens
    assert summary["spec_decode_acceptance_rate"] == pytest.approx(accepted / draft_tokens)
    assert summary["spec_decode_acceptance_length"] == pytest.approx(1 + accepted / drafts)
    client_tokens = run.summary.total_output
    assert generated == client_tokens, f"engine generated {generated} tokens, the client received {client_tokens}"
    assert drafts <= generated, f"{drafts} drafts for {generated} generated tokens"
    dsbench_gate.check()
