"""Fixtures of the conformance suite: the ``api`` context every API check runs with."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pytest_dsbench.conformance.context import ApiContext, Target
from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.session import EMBEDDED_MODEL_NAME, embedded_model_dir
from pytest_dsbench.thresholds import HardwareProfile

MAX_CHECK_CONCURRENCY = 32


def _model_dir(info: EngineInfo) -> str | None:
    """The served model's folder: the one given with --model, or the embedded fixture model by its name."""
    if info.model_path:
        return info.model_path
    embedded = embedded_model_dir()
    if info.model == EMBEDDED_MODEL_NAME and (embedded / "config.json").is_file():
        return str(embedded)
    return None


@pytest.fixture(scope="session")
def api(
    dsbench_engine: EngineInfo,
    dsbench_options: DsbenchOptions,
    hw_profile: HardwareProfile,
    openai_client: httpx.Client,
) -> ApiContext:
    """The conformance checks' context: engine, declared profile, hw limits, client, token counter, probes."""
    deployment = hw_profile.deployment
    model_dir = _model_dir(dsbench_engine)
    target = Target(
        engine=dsbench_engine.name,
        model=dsbench_engine.model,
        behaviour=dsbench_engine.behaviour,
        max_model_len=dsbench_engine.max_model_len or deployment.max_model_len,
        hw_max_model_len=deployment.max_model_len,
        max_input_len=deployment.max_input_len,
        max_input_len_enforced=bool(getattr(deployment, "max_input_len_enforced", False)),
        model_path=model_dir,
        tokenizer_path=dsbench_engine.tokenizer_path
        or (model_dir if model_dir and Path(model_dir).is_dir() else None),
        version=dsbench_engine.version,
    )
    ctx = ApiContext.create(target, openai_client, dsbench_options.request_timeout_s)
    ctx.concurrency = min(MAX_CHECK_CONCURRENCY, deployment.max_concurrency or MAX_CHECK_CONCURRENCY)
    ctx.health_latency_s_max = hw_profile.slo.health_latency_s_max
    return ctx

