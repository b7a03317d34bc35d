"""What every ``[throughput.NAME]`` workload has, and the judge that applies its limits.

Each evaluation method (:mod:`pytest_dsbench.methods`) declares its own configuration model on top of
:class:`WorkloadEntry` (only the keys it uses) and its own judge: which metrics it measures and which limits
apply. A limit key is always the limited metric's :attr:`~pytest_dsbench.metrics.Metric.limit_key`
(``output_tok_s_min``, ``tpot_ms_mean_max``), so a judge names metrics, never keys.

This module imports nothing that imports :mod:`pytest_dsbench.thresholds`, which builds its
``[throughput.*]`` schema from the methods' models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from pytest_dsbench import metrics
from pytest_dsbench.load.datasets import DatasetName
from pytest_dsbench.metrics import Limit

if TYPE_CHECKING:
    from pytest_dsbench.gate import Gate
    from pytest_dsbench.load.runner import LoadRun
    from pytest_dsbench.thresholds import HardwareProfile

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Engine = Literal["vllm", "sglang", "lmdeploy"]


STRICT = ConfigDict(extra="forbid", frozen=True)
"""A table of a hardware profile: unknown keys are errors, values are frozen after loading."""


class StrictModel(BaseModel):
    """A table of a hardware profile (:data:`STRICT`)."""

    model_config = STRICT


class WorkloadEntry(StrictModel):
    """The keys every ``[throughput.NAME]`` workload has, whatever its method."""

    method: str
    output_len: PositiveInt
    num_prompts: PositiveInt
    seed: int | None = None
    range_ratio: Annotated[float, Field(ge=0, le=1)] | None = None
    engines: list[Engine] = Field(default=[], description="run only against these engines (default: every one)")
    source: str = ""

    replaced_keys: ClassVar[dict[str, str]] = {}
    """Keys this method does not take, and what to write instead (shown by the validation error)."""

    @classmethod
    def limit_metrics(cls) -> list[str]:
        """The metrics this method's entries can limit (their ``{metric}_min`` / ``{metric}_max`` keys)."""
        return [name for name in metrics.METRICS if metrics.METRICS[name].limit_key in cls.model_fields]


class OneRunWorkload(WorkloadEntry):
    """A workload that is one load run: random prompts of one input length at a request rate and concurrency.

    Such an entry can also load the engine for the SLO tests (``[slo] workload``).
    """

    input_len: PositiveInt
    max_concurrency: PositiveInt | None = None
    request_rate: PositiveFloat | None = None

    def dataset_name(self) -> DatasetName:
        """The data set its prompts come from (the seeds' methods use sglang's random data set)."""
        return "random"

    def arrival_burstiness(self) -> float | None:
        """Gamma burstiness of its arrivals; None: Poisson."""
        return None


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
        """The profile's ``[slo]`` limit on ``metric``, applied to this workload's runs."""
        key = metrics.get(metric).limit_key
        value = getattr(self.profile.slo, key, None)
        return Limit(None if value is None else float(value), self.where(f"/ [slo] {key}"))

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
        """The error rate against ``[slo] error_rate_max``, and the expert load where the engine exposes it."""
        from pytest_dsbench.load.api import record_run_health

        record_run_health(self.gate, run, self.slo_limit("error_rate"))


class MethodUnavailable(Exception):
    """A method cannot run against this engine as configured (the message says what to pass); the test skips."""
