"""The seeds' evaluation methods on top of the load generator: DeepLink (seed 000), ali and tencent (seed 003),
and ``random`` (a workload as written: seed 001's table, seed 004's example).

Each method module declares its ``[throughput.NAME]`` configuration (a pydantic model with only the keys the
method uses, told apart by ``method``), a ``run`` that turns an entry into load runs (writing the seed's own
output files under ``<artifacts>/load/methods``), and a ``judge`` that records what was measured against the
limits that apply. :data:`METHODS` maps each ``method`` value to them; :data:`WorkloadConfig` is the union the
hardware profile validates ``[throughput.*]`` entries with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field

from pytest_dsbench.methods import ali, deeplink, random_workload, tencent
from pytest_dsbench.methods.entry import Judge, MethodUnavailable, OneRunWorkload, WorkloadEntry

WorkloadConfig = Annotated[
    deeplink.DeeplinkConfig
    | tencent.TencentConfig
    | ali.AliDecodeConfig
    | ali.AliPrefillConfig
    | random_workload.RandomConfig,
    Field(discriminator="method"),
]
"""One ``[throughput.NAME]`` entry, validated by the model of its ``method``."""


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
    "deeplink": Method("deeplink", deeplink.DeeplinkConfig, deeplink.run, deeplink.judge),
    "tencent": Method("tencent", tencent.TencentConfig, tencent.run, tencent.judge),
    "ali_decode": Method("ali_decode", ali.AliDecodeConfig, ali.run_decode_workload, ali.judge_decode),
    "ali_prefill": Method("ali_prefill", ali.AliPrefillConfig, ali.run_prefill_workload, ali.judge_prefill),
    "random": Method("random", random_workload.RandomConfig, random_workload.run, random_workload.judge),
}
"""Every evaluation method by its ``method`` value."""

EVALUATION_METHODS = tuple(METHODS)


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
