"""Engine name to adapter."""

from __future__ import annotations

from pytest_dsbench.engines.base import EngineAdapter
from pytest_dsbench.engines.lmdeploy import LmdeployAdapter
from pytest_dsbench.engines.sglang import SglangAdapter
from pytest_dsbench.engines.vllm import VllmAdapter
from pytest_dsbench.errors import DsbenchUsageError

ADAPTERS: dict[str, type[EngineAdapter]] = {
    "vllm": VllmAdapter,
    "sglang": SglangAdapter,
    "lmdeploy": LmdeployAdapter,
}


def get_adapter(name: str) -> EngineAdapter:
    """The adapter for ``name``, or a usage error listing the valid engines."""
    try:
        return ADAPTERS[name]()
    except KeyError:
        raise DsbenchUsageError(f"unknown engine {name!r}. Valid engines: {', '.join(sorted(ADAPTERS))}.") from None
