"""The ``[throughput.NAME]`` keys of seed 003's ali methods, decode and prefill (:mod:`pytest_dsbench.methods.ali`)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from pytest_dsbench.workloads.entry import PositiveFloat, PositiveInt, WorkloadEntry

DECODE_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


PREFILL_INPUT_LENS = (1024, 2048, 4096)

MIN_REPEATS = 3
"""Fewest repeats of a prefill length (a t interval of two values is mostly its t quantile)."""
DEFAULT_MAX_REPEATS = 10
DEFAULT_TARGET_HALF_WIDTH_REL = 0.1
DEFAULT_REPEAT_BUDGET_S = 120.0


class AliDecodeConfig(WorkloadEntry):
    """``method = "ali_decode"``: one random workload per batch size, at max concurrency = that size."""

    method: Literal["ali_decode"]
    input_len: PositiveInt
    batch_sizes: list[PositiveInt] = Field(
        default=[], description=f"max concurrencies to probe (default {list(DECODE_BATCH_SIZES)})")


class AliPrefillConfig(WorkloadEntry):
    """``method = "ali_prefill"``: one workload per input length (one output token each)."""

    method: Literal["ali_prefill"]
    input_lens: list[PositiveInt] = Field(
        default=[], description=f"input lengths to probe (default {list(PREFILL_INPUT_LENS)})")
    max_concurrency: PositiveInt | None = None
    request_rate: PositiveFloat | None = None
    input_tok_s_per_device_min: PositiveFloat | None = None
    target_half_width_rel: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        default=None, description="repeat each length until the 95% interval's half-width is at most this "
        f"fraction of the mean (default {DEFAULT_TARGET_HALF_WIDTH_REL:g}; at least {MIN_REPEATS} repeats)")
    max_repeats: Annotated[int, Field(ge=MIN_REPEATS)] | None = Field(
        default=None, description=f"most repeats of one length (default {DEFAULT_MAX_REPEATS})")
    repeat_budget_s: PositiveFloat | None = Field(
        default=None, description=f"most seconds of repeats per length (default {DEFAULT_REPEAT_BUDGET_S:g})")

    replaced_keys: ClassVar[dict[str, str]] = {
        "batch_sizes": "input_lens (the input lengths to probe)",
        "input_len": "input_lens (the input lengths to probe)",
    }
