"""The ``[throughput.NAME]`` keys of seed 003's tencent method (:mod:`pytest_dsbench.methods.tencent`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pytest_dsbench.workloads.entry import OneRunWorkload, PositiveFloat, PositiveInt

DEFAULT_MAX_PROBES = 6
DEFAULT_TIME_BUDGET_S = 1800.0


class TencentConfig(OneRunWorkload):
    """``method = "tencent"``: the fixed run (request rate = num_prompts and max concurrency 128 unless set) and
    the search below its max concurrency, bounded by ``search_max_probes`` and ``search_time_budget_s``."""

    method: Literal["tencent"]
    total_tok_s_min: PositiveFloat | None = None
    qpm_min: PositiveFloat | None = None
    search_max_probes: PositiveInt | None = Field(default=None, description=f"default {DEFAULT_MAX_PROBES}")
    search_time_budget_s: PositiveFloat | None = Field(
        default=None, description=f"default {DEFAULT_TIME_BUDGET_S:g} s")
