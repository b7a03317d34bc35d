"""Running conformance checks against the fake engine: the harness of the self-tests that prove each check
fails on its faults and passes on a compliant server. Never used against a user's deployment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from pytest_dsbench.conformance.catalog import Check
from pytest_dsbench.conformance.context import ApiContext, Target
from pytest_dsbench.engines.base import EngineBehaviour
from pytest_dsbench.engines.vllm.behaviour import BEHAVIOUR as VLLM_BEHAVIOUR
from pytest_dsbench.testing.fake_engine import FakeConfig, FakeEngineThread
from pytest_dsbench.testing.fake_tokens import FakeTokenCounter

FAKE_MAX_MODEL_LEN = 1024
FAKE_MAX_INPUT_LEN = 1020
SELFTEST_TIMEOUT_S = 3.0
TOOL_PARSER_ARGS = ("--enable-auto-tool-choice", "--tool-call-parser", "deepseek_v3")
SELFTEST_BEHAVIOUR: EngineBehaviour = dataclasses.replace(
    VLLM_BEHAVIOUR.for_launch(TOOL_PARSER_ARGS), known_failures=()
)
"""vLLM's profile as launched with a DeepSeek tool parser, so every check (tools included) runs against the
fake."""


def fake_config(faults: tuple[str, ...] = (), **fields: Any) -> FakeConfig:
    """A fake engine with the self-test limits and the given faults."""
    values: dict[str, Any] = {
        "max_model_len": FAKE_MAX_MODEL_LEN,
        "max_input_len": FAKE_MAX_INPUT_LEN,
        "faults": list(faults),
    }
    values.update(fields)
    return FakeConfig(**values)


def fake_context(
    engine: FakeEngineThread,
    behaviour: EngineBehaviour = SELFTEST_BEHAVIOUR,
    *,
    client: httpx.Client,
    concurrency: int = 8,
    **target_fields: Any,
) -> ApiContext:
    """An :class:`ApiContext` for a running fake engine, counting tokens with the fake's own tokenizer."""
    config = engine.config
    fields: dict[str, Any] = {
        "engine": "vllm",
        "model": config.model,
        "behaviour": behaviour,
        "max_model_len": config.max_model_len,
        "hw_max_model_len": config.max_model_len,
        "max_input_len": config.max_input_len,
        "max_input_len_enforced": config.max_input_len is not None,
    }
    fields.update(target_fields)
    ctx = ApiContext.create(Target(**fields), client, SELFTEST_TIMEOUT_S, counter=FakeTokenCounter())
    ctx.concurrency = concurrency
    return ctx


@contextmanager
def fake_check_context(
    faults: tuple[str, ...] = (), behaviour: EngineBehaviour = SELFTEST_BEHAVIOUR, **config_fields: Any
) -> Iterator[ApiContext]:
    """Start a fake engine with ``faults`` and yield a context for it; everything is closed afterwards."""
    with (
        FakeEngineThread(fake_config(faults, **config_fields)) as engine,
        httpx.Client(base_url=engine.base_url, timeout=SELFTEST_TIMEOUT_S) as client,
    ):
        yield fake_context(engine, behaviour, client=client)


def run_against(item: Check, faults: tuple[str, ...] = (), **config_fields: Any) -> None:
    """Run one check against a fake engine with ``faults`` (raises what the check raises)."""
    with fake_check_context(faults, **config_fields) as ctx:
        item.func(ctx)
