"""What every ``[throughput.NAME]`` workload has: the base models the methods' configurations extend.

A hardware profile is validated when pytest starts, before anything runs, so these schemas sit below the
load generator and the methods that run them (:mod:`pytest_dsbench.methods`).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from pytest_dsbench import metrics
from pytest_dsbench.engines.registry import ENGINE_NAMES, valid_engines

DatasetName = Literal["random", "random-ids", "sharegpt", "fixed"]
"""Where a workload's prompts come from (:mod:`pytest_dsbench.load.datasets`)."""


def _registered_engine(name: str) -> str:
    if name not in ENGINE_NAMES:
        raise PydanticCustomError("unknown_engine", "unknown engine", {"expected": valid_engines()})
    return name


EngineName = Annotated[str, AfterValidator(_registered_engine)]
"""An engine of :mod:`pytest_dsbench.engines.registry`."""

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


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
    engines: list[EngineName] = Field(default=[], description="run only against these engines (default: every one)")
    prefix_cache: Literal["cold", "warm"] = Field(default="cold", description=(
        "cold: the engine's prefix cache is emptied (or the prompts salted) before each measured run and a run "
        "that hit it is INVALID; warm: prompts may be served from the cache (a workload that measures reuse)"))
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
