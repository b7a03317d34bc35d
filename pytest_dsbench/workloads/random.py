"""The ``[throughput.NAME]`` keys of a workload as written (:mod:`pytest_dsbench.methods.random_workload`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pytest_dsbench.workloads.entry import DatasetName, OneRunWorkload, PositiveFloat


class RandomConfig(OneRunWorkload):
    """``method = "random"``: the workload as written, held to the floors it sets."""

    method: Literal["random"]
    dataset: DatasetName = Field(
        default="random", description="where the prompts come from (sharegpt: the file in --dsbench-datasets)")
    burstiness: PositiveFloat | None = Field(
        default=None, description="gamma arrivals (1 = Poisson, < 1 burstier) at request_rate")
    output_tok_s_min: PositiveFloat | None = None
    total_tok_s_min: PositiveFloat | None = None
    qpm_min: PositiveFloat | None = None

    def dataset_name(self) -> DatasetName:
        return self.dataset

    def arrival_burstiness(self) -> float | None:
        return self.burstiness
