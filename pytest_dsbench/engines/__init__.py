"""Engine adapters (vLLM, SGLang, LMDeploy), the launcher for start mode and the probe for attach mode."""

from __future__ import annotations

from pytest_dsbench.engines.base import EngineAdapter, EngineBehaviour, EngineInfo, KnownFailure, LaunchRequest
from pytest_dsbench.engines.registry import ADAPTERS, get_adapter

__all__ = [
           "ADAPTERS",
           "EngineAdapter",
           "EngineBehaviour",
           "EngineInfo",
           "KnownFailure",
           "LaunchRequest",
           "get_adapter",
]
