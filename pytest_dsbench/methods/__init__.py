"""The seeds' evaluation methods on top of the load generator: DeepLink (seed 000), ali and tencent (seed 003),
``random`` (a workload as written: seed 001's table, seed 004's example) and ``capacity`` (tencent's search
generalised: the largest concurrency or request rate under any p99 TTFT / TPOT / goodput limits).

Each method module has a ``run`` that turns a ``[throughput.NAME]`` entry into load runs (writing the seed's
own output files under ``<artifacts>/load/methods``) and a ``judge`` that records what was measured against the
limits that apply; the entry's configuration model (only the keys the method uses) is in
:mod:`pytest_dsbench.workloads`, which the hardware profile validates with before anything runs.
:data:`METHODS` maps each ``method`` value to the three.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pytest_dsbench.methods import ali, ali_prefill, capacity, deeplink, random_workload, tencent
from pytest_dsbench.methods.entry import Judge, MethodUnavailable
from pytest_dsbench.workloads import (
    EVALUATION_METHODS,
    AliDecodeConfig,
    AliPrefillConfig,
    CapacityConfig,
    DeeplinkConfig,
    OneRunWorkload,
    RandomConfig,
    TencentConfig,
    WorkloadConfig,
    WorkloadEntry,
)


@dataclass(frozen=True)
class Method:
    """An evaluation method: its configuration model, how it runs an entry, and how its results are judged."""

    name: str
    config: type[WorkloadEntry]
    run: Callable[[Any, str, Any], Any]
    """``run(load_context, entry_name, config)``: the method's load runs (raises InvalidRun, MethodUnavailable)."""
    judge: Callable[[Any, Judge], None]
    """``judge(result, judge)``: records every measurement against its limit through ``judge``."""


METHODS: dict[str, Method] = {
    "deeplink": Method("deeplink", DeeplinkConfig, deeplink.run, deeplink.judge),
    "tencent": Method("tencent", TencentConfig, tencent.run, tencent.judge),
    "ali_decode": Method("ali_decode", AliDecodeConfig, ali.run_decode_workload, ali.judge_decode),
    "ali_prefill": Method("ali_prefill", AliPrefillConfig, ali_prefill.run_prefill_workload, ali_prefill.judge_prefill),
    "random": Method("random", RandomConfig, random_workload.run, random_workload.judge),
    "capacity": Method("capacity", CapacityConfig, capacity.run, capacity.judge),
}
"""Every evaluation method by its ``method`` value."""

assert tuple(METHODS) == EVALUATION_METHODS, "every workload configuration has its method, in the same order"


__all__ = [
    "EVALUATION_METHODS",
    "METHODS",
    "Judge",
    "Method",
    "MethodUnavailable",
    "OneRunWorkload",
    "WorkloadConfig",
    "WorkloadEntry",
]
