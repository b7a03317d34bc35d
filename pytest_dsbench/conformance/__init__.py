"""API conformance checks (OpenAI and DeepSeek-R1) as importable functions, with their catalogue.

Each check takes an :class:`~pytest_dsbench.conformance.context.ApiContext` and raises
:class:`~pytest_dsbench.conformance.expect.CheckFailed` ("what: expected X, got Y") or
:class:`~pytest_dsbench.conformance.expect.CheckSkipped`. ``pytest_dsbench/suite/test_api_*.py`` run them against
the engine under test; the self-tests run each against the fake engine with and without its faults.

Names are loaded on first use, so ``python -m pytest_dsbench.conformance.catalog`` runs cleanly.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ApiContext": "context",
    "Target": "context",
    "Task": "context",
    "Check": "catalog",
    "all_checks": "catalog",
    "get": "catalog",
    "params": "catalog",
    "run": "catalog",
    "CheckFailed": "expect",
    "CheckSkipped": "expect",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pytest_dsbench.conformance' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pytest_dsbench.conformance.{_EXPORTS[name]}"), name)
