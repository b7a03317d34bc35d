"""The ``[throughput.NAME]`` keys of the capacity-under-SLO method (:mod:`pytest_dsbench.methods.capacity`)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from pytest_dsbench.workloads.entry import PositiveFloat, PositiveInt, WorkloadEntry

PROBE_LIMITS = (
    "ttft_ms_p99", "tpot_ms_p99", "ttft_ms_p90", "tpot_ms_p90", "tpot_ms_mean", "e2e_ms_p99", "goodput_fraction",
)
"""The metrics a capacity search can hold its probes to (their ``_max`` / ``_min`` keys), any combination."""
DEFAULT_REPEATS = 2
DEFAULT_MAX_PROBES = 6
DEFAULT_TIME_BUDGET_S = 900.0
DEFAULT_RATE_STEP = 0.5


class CapacityConfig(WorkloadEntry):
    """``method = "capacity"``: the largest max-concurrency (``search = "concurrency"``, closed loop) or request
    rate (``search = "request_rate"``, Poisson arrivals) in [``low``, ``high``] at which every repeat of the probe
    meets every limit set here, and the error rate ``[slo] error_rate_max``."""

    method: Literal["capacity"]
    input_len: PositiveInt
    search: Literal["concurrency", "request_rate"] = "concurrency"
    low: PositiveFloat = Field(default=1.0, description="lowest concurrency / request rate (req/s) probed")
    high: PositiveFloat | None = Field(
        default=None, description="highest one (default for concurrency: deployment.max_concurrency, else 64; "
        "required for request_rate)")
    rate_step: PositiveFloat = Field(
        default=DEFAULT_RATE_STEP, description="resolution of a request-rate search (req/s)")
    max_concurrency: PositiveInt | None = Field(
        default=None, description="cap on requests in flight during a request-rate search")
    repeats: PositiveInt = Field(default=DEFAULT_REPEATS, description="runs per probe (fresh prompts each); "
                                 "a probe passes when every repeat does")
    max_probes: PositiveInt = DEFAULT_MAX_PROBES
    time_budget_s: PositiveFloat = DEFAULT_TIME_BUDGET_S
    ttft_ms_p99_max: PositiveFloat | None = None
    tpot_ms_p99_max: PositiveFloat | None = None
    ttft_ms_p90_max: PositiveFloat | None = None
    tpot_ms_p90_max: PositiveFloat | None = None
    tpot_ms_mean_max: PositiveFloat | None = None
    e2e_ms_p99_max: PositiveFloat | None = None
    goodput_fraction_min: Annotated[float, Field(gt=0, le=1)] | None = None
    goodput_ttft_ms_max: PositiveFloat | None = Field(default=None, description="per-request goodput rule")
    goodput_tpot_ms_max: PositiveFloat | None = None
    goodput_e2e_ms_max: PositiveFloat | None = None
    max_concurrency_under_slo_min: PositiveFloat | None = None
    max_request_rate_under_slo_min: PositiveFloat | None = None

    not_limits: ClassVar[frozenset[str]] = frozenset(
        {"goodput_ttft_ms_max", "goodput_tpot_ms_max", "goodput_e2e_ms_max"})
    """The per-request thresholds of the goodput rule, not limits on a run's metric."""

    @model_validator(mode="after")
    def _searchable(self) -> CapacityConfig:
        limits = [m for m in PROBE_LIMITS if self.probe_limits().get(m) is not None]
        if not limits:
            keys = ", ".join(f"{m}_min" if m == "goodput_fraction" else f"{m}_max" for m in PROBE_LIMITS)
            raise ValueError(f"a capacity entry needs at least one limit for its probes: {keys}")
        if self.goodput_fraction_min is not None and self.goodput_rule_empty:
            raise ValueError("goodput_fraction_min needs the per-request rule: goodput_ttft_ms_max, "
                             "goodput_tpot_ms_max or goodput_e2e_ms_max")
        if self.search == "request_rate" and self.high is None:
            raise ValueError("a request_rate search needs high (the highest request rate to probe, req/s)")
        if self.high is not None and self.high < self.low:
            raise ValueError(f"high ({self.high:g}) is below low ({self.low:g})")
        return self

    @property
    def goodput_rule_empty(self) -> bool:
        return self.goodput_ttft_ms_max is None and self.goodput_tpot_ms_max is None and self.goodput_e2e_ms_max is None

    def probe_limits(self) -> dict[str, float | None]:
        """Each probe metric and its limit here (None: not held to it)."""
        return {m: getattr(self, f"{m}_min" if m == "goodput_fraction" else f"{m}_max") for m in PROBE_LIMITS}
