"""The judge that applies a ``[throughput.NAME]`` workload's limits to what its method measured.

Each evaluation method has its configuration model in :mod:`pytest_dsbench.workloads` (only the keys it uses)
and its own judge here: which metrics it measures and which limits apply. A limit key is always the limited
metric's :attr:`~pytest_dsbench.metrics.Metric.limit_key` (``output_tok_s_min``, ``tpot_ms_mean_max``), so a
judge names metrics, never keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_dsbench import metrics
from pytest_dsbench.metrics import Limit
from pytest_dsbench.workloads.entry import WorkloadEntry

if TYPE_CHECKING:
    from pytest_dsbench.gate import Gate
    from pytest_dsbench.load.runner import LoadRun
    from pytest_dsbench.thresholds import HardwareProfile

@dataclass
class Judge:
    """Applies one ``[throughput.NAME]`` workload's limits to what its method measured, through the test's gate."""

    gate: Gate
    profile: HardwareProfile
    name: str
    entry: WorkloadEntry

    def where(self, key: str) -> str:
        """``"cpu.toml [throughput.NAME] key"``: where a limit of this workload is set."""
        return self.profile.where(f"[throughput.{self.name}] {key}")

    def limit(self, metric: str) -> Limit | None:
        """This workload's limit on ``metric`` (its ``{metric}_min`` / ``_max`` key; value None when unset), or
        None when this method has no such key (the metric is recorded, never limited)."""
        key = metrics.get(metric).limit_key
        if key not in type(self.entry).model_fields:
            return None
        value = getattr(self.entry, key)
        return Limit(None if value is None else float(value), self.where(key))

    def slo_limit(self, metric: str) -> Limit:
        """The profile's ``[slo]`` limit on ``metric``, applied to this workload's runs (its source names both)."""
        limit = self.profile.slo_limit(metric)
        return Limit(limit.value, self.where(f"/ [slo] {metrics.get(metric).limit_key}"))

    def record(
        self,
        run: LoadRun,
        metric: str,
        limit: Limit | None = None,
        *,
        value: float | None = None,
        workload: dict[str, Any] | None = None,
    ) -> None:
        """Record ``metric`` of ``run`` against ``limit`` (default: this workload's own limit on it)."""
        from pytest_dsbench.load.api import record_run_metric

        record_run_metric(
            self.gate, run, metric, self.limit(metric) if limit is None else limit, value=value, workload=workload
        )

    def record_health(self, run: LoadRun) -> None:
        """The error rate against ``[slo] error_rate_max``, the expert load where the engine exposes it, and the
        engine's server metrics against their ``[slo]`` limits (``preemptions_max``, ...)."""
        from pytest_dsbench.load.api import record_run_health

        record_run_health(self.gate, run, self.slo_limit("error_rate"), self.slo_limit)


class MethodUnavailable(Exception):
    """A method cannot run against this engine as configured (the message says what to pass); the test skips."""
