"""The ``[throughput.NAME]`` keys of seed 003's ali methods, decode and prefill (:mod:`pytest_dsbench.methods.ali`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from pytest_dsbench.workloads.entry import PositiveFloat, PositiveInt, WorkloadEntry

DECODE_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


PREFILL_INPUT_LENS = (1024, 2048, 4096)


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

    replaced_keys: ClassVar[dict[str, str]] = {
        "batch_sizes": "input_lens (the input lengths to probe)",
        "input_len": "input_lens (the input lengths to probe)",
    }
