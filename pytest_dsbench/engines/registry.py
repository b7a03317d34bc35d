"""The engines pytest-dsbench launches and judges: the one list every other module validates against.

Each engine is a package ``pytest_dsbench.engines.<name>`` (adapter and launch flags, behaviour, log format,
EPLB hook). The table below names each engine and where its adapter class lives. Adapters are imported on
first use, so reading the names (``--engine`` choices, the ``[engines.NAME]`` keys of a hardware profile, the
per-engine deviations of a conformance check) imports nothing else. To add an engine, add its package and one
line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING

from pytest_dsbench.errors import DsbenchUsageError

if TYPE_CHECKING:
    from pytest_dsbench.engines.base import EngineAdapter

ADAPTER_CLASSES: dict[str, str] = {
    "vllm": "pytest_dsbench.engines.vllm.adapter:VllmAdapter",
    "sglang": "pytest_dsbench.engines.sglang.adapter:SglangAdapter",
    "lmdeploy": "pytest_dsbench.engines.lmdeploy.adapter:LmdeployAdapter",
}
"""Engine name -> ``module:class`` of its adapter; the order is the order engines are listed and tried in."""

ENGINE_NAMES: tuple[str, ...] = tuple(ADAPTER_CLASSES)


def valid_engines() -> str:
    """The registered engine names for messages: ``"lmdeploy, sglang, vllm"``."""
    return ", ".join(sorted(ENGINE_NAMES))


def unknown_engines(names: Iterable[str]) -> list[str]:
    """The names in ``names`` that are not registered engines, sorted (empty when every one is)."""
    return sorted(set(names) - set(ENGINE_NAMES))


@cache
def adapter_class(name: str) -> type[EngineAdapter]:
    """The adapter class of the registered engine ``name`` (imported on first use); KeyError for others."""
    module, _, attribute = ADAPTER_CLASSES[name].partition(":")
    cls: type[EngineAdapter] = getattr(importlib.import_module(module), attribute)
    if cls.name != name:
        raise RuntimeError(f"{ADAPTER_CLASSES[name]} declares name {cls.name!r}, registered as {name!r}: "
                           "make the adapter's name and its registry key the same")
    return cls


def get_adapter(name: str) -> EngineAdapter:
    """The adapter for ``name``, or a usage error listing the valid engines."""
    if name not in ADAPTER_CLASSES:
        raise DsbenchUsageError(f"unknown engine {name!r}. Valid engines: {valid_engines()}.")
    return adapter_class(name)()


def all_adapters() -> dict[str, type[EngineAdapter]]:
    """Every registered engine's adapter class, in registry order."""
    return {name: adapter_class(name) for name in ENGINE_NAMES}
