"""The ``[throughput.NAME]`` entries of a hardware profile: one configuration model per evaluation method.

Each method's model declares only the keys that method uses (``ali_prefill`` takes ``input_lens``, ``ali_decode``
``batch_sizes``), told apart by ``method``. :data:`WorkloadConfig` is the union the hardware profile validates
its entries with when pytest starts. The methods that run the entries and judge them, on top of the load
generator, are :mod:`pytest_dsbench.methods`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from pytest_dsbench.workloads.ali import AliDecodeConfig, AliPrefillConfig
from pytest_dsbench.workloads.capacity import CapacityConfig
from pytest_dsbench.workloads.deeplink import DeeplinkConfig
from pytest_dsbench.workloads.entry import OneRunWorkload, WorkloadEntry
from pytest_dsbench.workloads.random import RandomConfig
from pytest_dsbench.workloads.tencent import TencentConfig

WorkloadConfig = Annotated[
    DeeplinkConfig | TencentConfig | AliDecodeConfig | AliPrefillConfig | RandomConfig | CapacityConfig,
    Field(discriminator="method"),
]
"""One ``[throughput.NAME]`` entry, validated by the model of its ``method``."""

WORKLOAD_CONFIGS: dict[str, type[WorkloadEntry]] = {
    "deeplink": DeeplinkConfig,
    "tencent": TencentConfig,
    "ali_decode": AliDecodeConfig,
    "ali_prefill": AliPrefillConfig,
    "random": RandomConfig,
    "capacity": CapacityConfig,
}
"""Every evaluation method's configuration model by its ``method`` value."""

EVALUATION_METHODS = tuple(WORKLOAD_CONFIGS)

__all__ = [
    "EVALUATION_METHODS",
    "WORKLOAD_CONFIGS",
    "AliDecodeConfig",
    "AliPrefillConfig",
    "CapacityConfig",
    "DeeplinkConfig",
    "OneRunWorkload",
    "RandomConfig",
    "TencentConfig",
    "WorkloadConfig",
    "WorkloadEntry",
]
