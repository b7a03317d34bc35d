"""The ``[throughput.NAME]`` keys of seed 000's DeepLink method (:mod:`pytest_dsbench.methods.deeplink`)."""

from __future__ import annotations

from typing import Literal

from pytest_dsbench.workloads.entry import OneRunWorkload, PositiveFloat


class DeeplinkConfig(OneRunWorkload):
    """``method = "deeplink"``: seed 000's sglang.bench_serving run on random prompts (range ratio 1, seed 42
    unless set), all requests at once unless ``request_rate`` / ``max_concurrency`` say otherwise."""

    method: Literal["deeplink"]
    output_tok_s_min: PositiveFloat | None = None
