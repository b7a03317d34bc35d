"""Every metric the suite reports, declared once: name, unit, direction, how it is computed, and its samples.

A declaration (AIPerf's metric classes, without their class hierarchy) is the only place that knows a metric:

* :class:`LatencyMetric` -- one statistic of a per-request latency (``tpot_ms_p99``); its samples are the
  requests' values, so a regression is tested on the requests themselves.
* :class:`RunMetric` -- a total or fraction of a whole run (``output_tok_s``, ``error_rate``), computed from the
  run's records; throughputs take the run's 1-s windows as samples.
* :class:`ReportedMetric` -- a value measured elsewhere (the client self-check, a server log, the tencent
  search, an accuracy run); the measuring code passes its samples.

Names carry their unit (``tpot_ms_mean``, ``output_tok_s``). The direction tells SLO and regression gates which
way is worse, and names a metric's limit in ``thresholds/<hw>.toml``: ``{name}_max`` when lower is better,
``{name}_min`` when higher is better (:attr:`Metric.limit_key`). Formulas follow sglang.bench_serving exactly
(reference bench_tools.md section (c)) so the numbers match the tool the seeds use; vLLM-style goodput,
per-GPU / per-user throughput (InferenceX) and the time to the first *answer* token of reasoning models are
computed alongside under their own names.

A test records a load run's metric with ``metrics.get(name).measure(run.summary)`` (value, samples and
sample count together), through :func:`pytest_dsbench.load.api.record_run_metric`; recording an undeclared
name fails with the declared names.

The computations read a run's per-request records through :class:`pytest_dsbench.measures.RunData` (per-request
latencies, output lengths, goodput and 1-s windows, each derived once).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pytest_dsbench.measures import (
    WINDOW_S,
    GoodputSlo,
    RecordLike,
    RunData,
    itl_s,
    latency_s,
    output_len,
    stat,
    tpot_s,
    ttft_s,
    window_output_tok_s,
)

Direction = Literal["lower_is_better", "higher_is_better"]
STATS = ("mean", "median", "std", "p90", "p95", "p99", "max")


class UnknownMetric(KeyError):
    """A metric name that no declaration here defines (a typo, or a metric that was never declared)."""

    def __str__(self) -> str:
        return str(self.args[0])


# -- the run summary
# -------------------------------------------------------------------------------------------


@dataclass
class Summary:
    """Aggregates of one load run: metric name -> value, plus the samples behind them.

    ``samples`` holds the per-request values of each latency (``"tpot"``: ms per request) and the run's 1-s
    output tok/s windows (``"output_tok_s"``); a declaration's :meth:`Metric.measure` picks its own.
    """

    values: dict[str, float]
    samples: dict[str, list[float]] = field(default_factory=dict)
    completed: int = 0
    failed: int = 0
    total_input: int = 0
    total_output: int = 0
    total_output_retokenized: int = 0
    duration_s: float = 0.0

    def __getitem__(self, name: str) -> float:
        return self.values[name]

    def as_dict(self) -> dict[str, Any]:
        return {
            "values": self.values,
            "completed": self.completed,
            "failed": self.failed,
            "total_input": self.total_input,
            "total_output": self.total_output,
            "total_output_retokenized": self.total_output_retokenized,
            "duration_s": self.duration_s,
        }


# -- declarations
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """The value a metric must meet (None: not limited, only recorded) and where it is set, for messages
    (``"cpu.toml [slo] tpot_ms_mean_max"``)."""

    value: float | None
    source: str


@dataclass(frozen=True)
class Measurement:
    """A metric's value in one run with the samples behind it (what ``dsbench_gate.record`` takes)."""

    metric: Metric
    value: float
    samples: list[float]
    sample_count: int


@dataclass(frozen=True)
class Metric:
    """A metric's declaration: what it is called, its unit, which way is better and what it means."""

    name: str
    unit: str
    direction: Direction
    definition: str

    @property
    def comparison(self) -> Literal["<=", ">="]:
        """How a value must compare with this metric's limit to pass."""
        return "<=" if self.direction == "lower_is_better" else ">="

    @property
    def limit_key(self) -> str:
        """The key of this metric's limit in a thresholds table: ``{name}_max`` or ``{name}_min``."""
        return f"{self.name}_max" if self.direction == "lower_is_better" else f"{self.name}_min"

    def worse(self, new: float, old: float) -> bool:
        """True when ``new`` is worse than ``old`` in this metric's direction."""
        return new > old if self.direction == "lower_is_better" else new < old

    def change_pct(self, new: float, old: float) -> float:
        """Signed change in percent where positive always means worse."""
        if old == 0:
            return 0.0 if new == 0 else float("inf")
        raw = (new - old) / abs(old) * 100.0
        return raw if self.direction == "lower_is_better" else -raw

    def compute(self, run: RunData) -> float | None:
        """This metric's value from a run's records; None when records do not give it (measured elsewhere)."""
        return None

    def samples(self, summary: Summary) -> list[float]:
        """The samples the regression gate's statistical test runs on; empty where a run has none."""
        return []

    def sample_count(self, summary: Summary) -> int:
        """How many observations stand behind the value (the requests a run completed, unless said otherwise)."""
        return summary.completed

    def measure(self, summary: Summary, value: float | None = None) -> Measurement:
        """The value (the summary's unless ``value`` is given), samples and sample count of one run."""
        return Measurement(
            self, summary[self.name] if value is None else value, self.samples(summary), self.sample_count(summary)
        )


@dataclass(frozen=True)
class ReportedMetric(Metric):
    """A metric whose value is measured outside the run's records (client self-check, server log, search)."""


@dataclass(frozen=True)
class LatencyMetric(Metric):
    """One statistic of a per-request latency; its samples are the requests' values (ms)."""

    latency: str = ""
    stat: str = ""

    def compute(self, run: RunData) -> float | None:
        return stat(run.latency_arrays[self.latency], self.stat)

    def samples(self, summary: Summary) -> list[float]:
        return list(summary.samples.get(self.latency, []))

    def sample_count(self, summary: Summary) -> int:
        return len(summary.samples.get(self.latency, []))


@dataclass(frozen=True)
class RunMetric(Metric):
    """A total, rate or fraction of the whole run, computed from its records by ``formula``.

    ``windowed``: its samples are the run's 1-s output tok/s windows scaled by the run's ratio of this metric
    to output tok/s (a ratio the workload fixes). ``counts``: the observations behind it, the completed
    requests or every request sent.
    """

    formula: Callable[[RunData], float | None] = field(default=lambda run: None)
    windowed: bool = False
    counts: Literal["completed", "sent"] = "completed"

    def compute(self, run: RunData) -> float | None:
        return self.formula(run)

    def samples(self, summary: Summary) -> list[float]:
        windows = summary.samples.get("output_tok_s", [])
        output = summary.values.get("output_tok_s", 0.0)
        if not self.windowed or not windows or output <= 0:
            return []
        scale = summary.values.get(self.name, 0.0) / output
        return [w * scale for w in windows]

    def sample_count(self, summary: Summary) -> int:
        return summary.completed + summary.failed if self.counts == "sent" else summary.completed


def _latency(name: str, definition: str) -> list[Metric]:
    return [LatencyMetric(f"{name}_ms_{s}", "ms", "lower_is_better", f"{s} of {definition}", name, s) for s in STATS]


def _run(
    name: str, unit: str, direction: Direction, definition: str, formula: Callable[[RunData], float | None], **kw: Any
) -> Metric:
    return RunMetric(name, unit, direction, definition, formula, **kw)


def _reported(name: str, unit: str, direction: Direction, definition: str) -> Metric:
    return ReportedMetric(name, unit, direction, definition)


HI: Direction = "higher_is_better"
LO: Direction = "lower_is_better"


def _rate(total: Callable[[RunData], float], per_device: bool = False) -> Callable[[RunData], float]:
    """A total divided by the run's duration (and by the deployment's accelerators)."""
    return lambda run: total(run) * run.per_s / (run.devices if per_device else 1)


def _per_user(run: RunData) -> float:
    mean_tpot = stat(run.latency_arrays["tpot"], "mean")
    return 1000.0 / mean_tpot if mean_tpot > 0 else 0.0


def _error_rate(run: RunData) -> float:
    return (len(run.records) - len(run.ok)) / len(run.records) if run.records else 0.0


def _mismatch(run: RunData) -> float:
    bad = [r for r in run.ok if r.usage_completion_tokens is not None and r.usage_completion_tokens != r.max_tokens]
    return len(bad) / len(run.ok) if run.ok else 0.0


def _goodput_fraction(run: RunData) -> float | None:
    return None if run.good is None else (run.good / len(run.records) if run.records else 0.0)


def _in(run: RunData) -> float:
    return float(run.total_input)


def _out(run: RunData) -> float:
    return float(run.total_output)


def _all(run: RunData) -> float:
    return float(run.total_input + run.total_output)


def _done(run: RunData) -> float:
    return float(len(run.ok))


_DECLARED: list[Metric] = [
    *_latency(
        "ttft",
        "time from sending the request to the first streamed chunk carrying text (reasoning included), "
        "successful requests",
    ),
    *_latency(
        "ttfat",
        "time from sending the request to the first chunk of the answer (after the reasoning), "
        "requests that produced an answer",
    ),
    *_latency(
        "tpot",
        "per request (e2e - ttft) / (output_tokens - 1), successful requests with more than one output "
        "token (sglang/vLLM TPOT)",
    ),
    *_latency(
        "itl",
        "gaps between consecutive streamed text chunks, pooled over all requests (sglang ITL, per chunk)",
    ),
    *_latency("e2e", "request latency from sending to the last line received"),
    _run("output_tok_s", "tok/s", HI, "sum of output tokens (usage, else the requested length) / benchmark duration",
         _rate(_out), windowed=True),
    _run("output_tok_s_retokenized", "tok/s", HI, "sum of retokenized generated text lengths / benchmark duration",
         _rate(lambda run: float(run.total_retokenized))),
    _run("input_tok_s", "tok/s", HI, "sum of declared prompt lengths / benchmark duration", _rate(_in)),
    _run("total_tok_s", "tok/s", HI, "(input + output tokens) / benchmark duration", _rate(_all), windowed=True),
    _run("request_throughput_req_s", "req/s", HI, "completed requests / benchmark duration", _rate(_done),
         windowed=True),
    _run("qpm", "req/min", HI, "completed requests per minute (60 x request throughput)",
         _rate(lambda run: 60.0 * len(run.ok)), windowed=True),
    _run(
        "goodput_req_s",
        "req/s",
        HI,
        "requests meeting every per-request SLO / duration (vLLM --goodput rule: "
        "ttft <= T and tpot <= P and e2e <= E, tpot := 0 when output <= 1 token)",
        lambda run: None if run.good is None else run.good * run.per_s,
    ),
    _run("goodput_fraction", "fraction", HI, "requests meeting every per-request SLO / all requests sent",
         _goodput_fraction, counts="sent"),
    _run(
        "output_tok_s_per_device",
        "tok/s",
        HI,
        "output tok/s / accelerators of the deployment (InferenceX output_tput_per_gpu)",
        _rate(_out, per_device=True),
        windowed=True,
    ),
    _run("total_tok_s_per_device", "tok/s", HI, "total tok/s / accelerators (InferenceX tput_per_gpu)",
         _rate(_all, per_device=True), windowed=True),
    _run("input_tok_s_per_device", "tok/s", HI,
         "input tok/s / accelerators (seed 003 ali prefill: Input Throughput Per GPU)", _rate(_in, per_device=True)),
    _run("output_tok_s_per_user", "tok/s", HI,
         "1000 / mean TPOT in ms (InferenceX interactivity, tokens per second one user sees)", _per_user),
    _run("peak_output_tok_s", "tok/s", HI, "max over 1-s bins of streamed text chunks received (sglang's peak)",
         lambda run: run.peaks[0]),
    _run("peak_concurrent_requests", "req", HI, "max over 1-s bins of requests in flight (sglang's peak; "
         "informational)", lambda run: run.peaks[1]),
    _run("concurrency_mean", "req", HI, "sum of request latencies / duration (Little's law; informational)",
         _rate(lambda run: sum(latency_s(r) for r in run.ok))),
    _run("duration_s", "s", LO, "benchmark duration: after warmup until the last request finished",
         lambda run: run.duration_s),
    _run("completed_requests", "req", HI, "successful requests", _done),
    _run("failed_requests", "req", LO, "requests that failed (HTTP error, broken stream, timeout)",
         lambda run: float(len(run.records) - len(run.ok)), counts="sent"),
    _reported("unsent_requests", "req", LO,
              "requests not sent because the run's time limit (max_duration_s) ran out"),
    _reported("accuracy", "fraction", HI, "fraction of samples scored correct"),
    _run("error_rate", "fraction", LO, "failed requests / all requests", _error_rate, counts="sent"),
    _run("output_len_mismatch_fraction", "fraction", LO,
         "requests whose server usage differs from the requested length under ignore_eos", _mismatch),
    _reported("health_latency_s", "s", LO, "how long GET /health took while streams generate (API check A06)"),
    # seed 003 ali decode: server-log decode throughput per running batch size
    _reported(
        "decode_tok_s",
        "tok/s",
        HI,
        "median decode (generation) throughput the server logged at one running batch "
        "size (SGLang 'gen throughput', vLLM/LMDeploy 'Avg generation throughput')",
    ),
    _reported("decode_tok_s_per_device", "tok/s", HI, "decode_tok_s / decode accelerators (seed 003 "
              "throughput_per_gpu)"),
    _reported("decode_tok_s_per_user", "tok/s", HI, "decode_tok_s / running batch size (seed 003 "
              "throughput_per_user)"),
    # seed 003 tencent: the concurrency search
    _reported("max_concurrency_under_slo", "req", HI, "largest max-concurrency whose probe met the TPOT limit"),
    # client self-check (pytest_dsbench.load.selfcheck)
    _reported("client_cpu_util", "fraction", LO,
              "client CPU time / wall time of the busiest worker (1.0 = a full core)"),
    _reported(
        "client_runnable_fraction",
        "fraction",
        LO,
        "(CPU time + run-queue wait) / wall time of the busiest worker: "
        "near 1.0 the client, not the server, limits the run",
    ),
    _reported("client_loop_lag_ms_p90", "ms", LO, "p90 lateness of a 5 ms event-loop probe (delays every "
              "timestamp)"),
    _reported("client_loop_lag_ms_p99", "ms", LO, "p99 lateness of a 5 ms event-loop probe"),
    _reported("client_send_lag_ms_p90", "ms", LO, "p90 of actual - scheduled dispatch time of requests"),
    _reported("client_send_lag_ms_p99", "ms", LO, "p99 of actual - scheduled dispatch time of requests"),
    _reported("client_queue_wait_ms_mean", "ms", LO,
              "mean wait for a max-concurrency slot (excluded from TTFT, as sglang)"),
    _reported("client_achieved_rate_ratio", "fraction", HI,
              "achieved / offered request rate over the arrival schedule"),
    # expert load during a load run (the suite's EPLB counter: --eplb observe|reference|balanced)
    _reported(
        "rank_load_max_over_mean",
        "ratio",
        LO,
        "routed slots of the busiest simulated expert-parallel rank / the mean over ranks, summed over MoE "
        "layers, during the run (1.0 = perfectly balanced)",
    ),
    _reported(
        "expert_load_max_over_mean",
        "ratio",
        LO,
        "routed slots of the busiest expert / the mean over experts, in the least balanced MoE layer, during "
        "the run",
    ),
    # the engine's own /metrics during the measured run (pytest_dsbench.load.server_metrics)
    _reported("preemptions", "req", LO, "requests the engine preempted during the run (vLLM num_preemptions, "
              "SGLang retracted requests), from its /metrics"),
    _reported("requests_running_peak", "req", HI, "most requests the engine reported running at one scrape "
              "during the run (informational)"),
    _reported("requests_waiting_peak", "req", LO, "longest queue of waiting requests the engine reported at one "
              "scrape during the run"),
    _reported("kv_cache_usage_peak", "fraction", LO, "highest KV-cache usage (0..1) the engine reported at one "
              "scrape during the run"),
    _reported("prefix_cache_hit_fraction", "fraction", LO, "prompt tokens served from the prefix cache / prompt "
              "tokens queried during the run (SGLang without counters: its cache_hit_rate gauge)"),
    _reported("spec_decode_acceptance_rate", "fraction", HI, "speculative decoding (MTP): accepted draft tokens / "
              "draft tokens during the run (SGLang: mean of its spec_accept_rate gauge)"),
    _reported("spec_decode_acceptance_length", "tok", HI, "speculative decoding (MTP): mean tokens per draft "
              "step, 1 + accepted tokens / drafts (vLLM's mean acceptance length; SGLang: spec_accept_length)"),
    # cross-check with the reference client
    _reported(
        "reference_diff_pct",
        "%",
        LO,
        "relative difference between this suite's value and sglang.bench_serving's on the same workload",
    ),
    # seed 002's per-module microbenchmarks (pytest_dsbench.modules; tests/modules, marker modules)
    _reported("module_time_ms_median", "ms", LO,
              "median time of one call of a model module (per-call times of the timed rounds as samples)"),
    _reported("module_bandwidth_gb_s", "GB/s", HI,
              "bytes of the module's minimum traffic (weights, inputs, outputs; modules/cost.py) / median time"),
    _reported("module_tflop_s", "TFLOP/s", HI, "matrix-product FLOPs of the module (modules/cost.py) / median time"),
    _reported("module_roofline_fraction", "fraction", HI,
              "roofline time (max of FLOPs / measured FLOP/s peak, bytes / measured bandwidth peaks) / median time"),
    _reported("device_peak_tflop_s", "TFLOP/s", HI, "measured FLOP/s of a large square GEMM on the device, per dtype"),
    _reported("device_peak_gb_s", "GB/s", HI,
              "measured bandwidth of a large copy: on the device (read + write), in host memory, host to device"),
]

METRICS: dict[str, Metric] = {m.name: m for m in _DECLARED}
"""Every declared metric by name."""


def get(name: str) -> Metric:
    """The declaration of ``name``; an undeclared name raises :class:`UnknownMetric` with close matches and the
    declared names."""
    try:
        return METRICS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(METRICS), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownMetric(
            f"unknown metric {name!r}.{hint} Declare it in pytest_dsbench/metrics.py or use a declared one: "
            f"{', '.join(METRICS)}"
        ) from None


def summarize(
    records: Sequence[RecordLike], duration_s: float, *, devices: int = 1, goodput: GoodputSlo | None = None
) -> Summary:
    """Every metric the declarations compute from one run's records (sglang.bench_serving's formulas)."""
    run = RunData(records, duration_s, devices, goodput)
    values: dict[str, float] = {}
    for metric in _DECLARED:
        value = metric.compute(run)
        if value is not None:
            values[metric.name] = 0.0 if isinstance(value, float) and math.isnan(value) else float(value)
    return Summary(
        values=values,
        samples={**run.latency_ms, "output_tok_s": window_output_tok_s(records)},
        completed=len(run.ok),
        failed=len(records) - len(run.ok),
        total_input=run.total_input,
        total_output=run.total_output,
        total_output_retokenized=run.total_retokenized,
        duration_s=duration_s,
    )


__all__ = [
    "METRICS",
    "WINDOW_S",
    "GoodputSlo",
    "LatencyMetric",
    "Limit",
    "Measurement",
    "Metric",
    "RecordLike",
    "ReportedMetric",
    "RunData",
    "RunMetric",
    "Summary",
    "UnknownMetric",
    "describe",
    "get",
    "itl_s",
    "latency_s",
    "output_len",
    "stat",
    "summarize",
    "tpot_s",
    "ttft_s",
    "window_output_tok_s",
]


def describe(names: Iterable[str]) -> list[str]:
    """One line per metric: name, unit, direction and definition (for docs and ``--help`` style listings)."""
    return [f"{m.name} [{m.unit}, {m.direction.replace('_', ' ')}]: {m.definition}" for m in map(get, names)]
