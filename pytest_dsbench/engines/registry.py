"""The engines pytest-dsbench launches and judges: the one list every other module validates against.

Each engine is a package ``pytest_dsbench.engines.<name>`` (adapter and launch flags, behaviour, log format,
EPLB hook). The table below names each engine and where its adapter class lives. Adapters are imported on
first use, so reading the names (``--engine`` choices, the ``[engines.NAME]`` keys of a hardware profile, the
per-engine deviations of a conformance check) imports nothing else: this module is a leaf that options and
thresholds can read, and :mod:`pytest_dsbench.engines.adapters` turns a name into its adapter. To add an
engine, add its package and one line here.
"""

from __future__ import annotations

from collections.abc import Iterable

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
