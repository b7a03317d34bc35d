"""Engine name -> adapter: the registered engines' adapter classes, imported on first use."""

from __future__ import annotations

import importlib
from functools import cache

from pytest_dsbench.engines.base import EngineAdapter
from pytest_dsbench.engines.registry import ADAPTER_CLASSES, ENGINE_NAMES, valid_engines
from pytest_dsbench.errors import DsbenchUsageError


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
