"""Every metric the suite reports, defined once: name, unit, direction, definition, and how it is computed.

Names carry their unit (``tpot_ms_mean``, ``output_tok_s``). The direction tells SLO and regression gates
which way is worse. Formulas follow sglang.bench_serving exactly (reference bench_tools.md section (c)) so the
numbers match the tool the seeds use; vLLM-style goodput, per-GPU / per-user throughput (InferenceX) and the
time to the first *answer* token of reasoning models are computed alongside under their own names.

The computations work on per-request records (:class:`pytest_dsbench.load.records.RequestRecord`, duck-typed
here so this module imports nothing heavy): ``start_s`` (just before the request was sent), ``chunk_s``
(receive times of the streamed chunks that carried text), ``end_s`` (the last line received), ``answer_s``,
the declared ``prompt_len``, the requested ``max_tokens`` and the server's ``usage_completion_tokens``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Direction = Literal["lower_is_better", "higher_is_better"]
STATS = ("mean", "median", "std", "p90", "p95", "p99", "max")


@dataclass(frozen=True)
class Metric:
    """A metric's definition."""

    name: str
    unit: str
    direction: Direction
    definition: str

    def worse(self, new: float, old: float) -> bool:
        """True when ``new`` is worse than ``old`` in this metric's direction."""
        return new > old if self.direction == "lower_is_better" else new < old

    def change_pct(self, new: float, old: float) -> float:
        """Signed change in percent where positive always means worse."""
        if old == 0:
            return 0.0 if new == 0 else float("inf")
        raw = (new - old) / abs(old) * 100.0
        return raw if self.direction == "lower_is_better" else -raw


def _lat(name: str, definition: str) -> list[Metric]:
    return [Metric(f"{name}_ms_{stat}", "ms", "lower_is_better", f"{stat} of {definition}") for stat in STATS]


def _hi(name: str, unit: str, definition: str) -> Metric:
    return Metric(name, unit, "higher_is_better", definition)


def _lo(name: str, unit: str, definition: str) -> Metric:
    return Metric(name, unit, "lower_is_better", definition)


_DEFINITIONS: list[Metric] = [
    *_lat(
        "ttft",
        "time from sending the request to the first streamed chunk carrying text (reasoning included), "
        "successful requests",
    ),
    *_lat(
        "ttfat",
        "time from sending the request to the first chunk of the answer (after the reasoning), "
        "requests that produced an answer",
    ),
    *_lat(
        "tpot",
        "per request (e2e - ttft) / (output_tokens - 1), successful requests with more than one output "
        "token (sglang/vLLM TPOT)",
    ),
    *_lat(
        "itl",
        "gaps between consecutive streamed text chunks, pooled over all requests (sglang ITL, per chunk)",
    ),
    *_lat("e2e", "request latency from sending to the last line received"),
    _hi(
        "output_tok_s",
        "tok/s",
        "sum of output tokens (usage, else the requested length) / benchmark duration",
    ),
    _hi("output_tok_s_retokenized", "tok/s", "sum of retokenized generated text lengths / benchmark duration"),
    _hi("input_tok_s", "tok/s", "sum of declared prompt lengths / benchmark duration"),
    _hi("total_tok_s", "tok/s", "(input + output tokens) / benchmark duration"),
    _hi("request_throughput_req_s", "req/s", "completed requests / benchmark duration"),
    _hi("qpm", "req/min", "completed requests per minute (60 x request throughput)"),
    _hi(
        "goodput_req_s",
        "req/s",
        "requests meeting every per-request SLO / duration (vLLM --goodput rule: "
        "ttft <= T and tpot <= P and e2e <= E, tpot := 0 when output <= 1 token)",
    ),
    _hi("goodput_fraction", "fraction", "requests meeting every per-request SLO / all requests sent"),
    _hi(
        "output_tok_s_per_device",
        "tok/s",
        "output tok/s / accelerators of the deployment (InferenceX output_tput_per_gpu)",
    ),
    _hi("total_tok_s_per_device", "tok/s", "total tok/s / accelerators (InferenceX tput_per_gpu)"),
    _hi(
        "input_tok_s_per_device",
        "tok/s",
        "input tok/s / accelerators (seed 003 ali prefill: Input Throughput Per GPU)",
    ),
    _hi(
        "output_tok_s_per_user",
        "tok/s",
        "1000 / mean TPOT in ms (InferenceX interactivity, tokens per second one user sees)",
    ),
    _hi("peak_output_tok_s", "tok/s", "max over 1-s bins of streamed text chunks received (sglang's peak)"),
    _hi(
        "peak_concurrent_requests",
        "req",
        "max over 1-s bins of requests in flight (sglang's peak; informational)",
    ),
    _hi("concurrency_mean", "req", "sum of request latencies / duration (Little's law; informational)"),
    _lo("duration_s", "s", "benchmark duration: after warmup until the last request finished"),
    _hi("completed_requests", "req", "successful requests"),
    _lo("failed_requests", "req", "requests that failed (HTTP error, broken stream, timeout)"),
    _lo("unsent_requests", "req", "requests not sent because the run's time limit (max_duration_s) ran out"),
    _hi("accuracy", "fraction", "fraction of samples scored correct"),
    _lo("error_rate", "fraction", "failed requests / all requests"),
    _lo(
        "output_len_mismatch_fraction",
        "fraction",
        "requests whose server usage differs from the requested length under ignore_eos",
    ),
    # seed 003 ali decode: server-log decode throughput per running batch size
    _hi(
        "decode_tok_s",
        "tok/s",
        "median decode (generation) throughput the server logged at one running batch "
        "size (SGLang 'gen throughput', vLLM/LMDeploy 'Avg generation throughput')",
    ),
    _hi("decode_tok_s_per_device", "tok/s", "decode_tok_s / decode accelerators (seed 003 throughput_per_gpu)"),
    _hi("decode_tok_s_per_user", "tok/s", "decode_tok_s / running batch size (seed 003 throughput_per_user)"),
    # seed 003 tencent: the concurrency search
    _hi("max_concurrency_under_slo", "req", "largest max-concurrency whose probe met the TPOT limit"),
    # client self-check
    _lo("client_cpu_util", "fraction", "client CPU time / wall time of the busiest worker (1.0 = a full core)"),
    _lo(
        "client_runnable_fraction",
        "fraction",
        "(CPU time + run-queue wait) / wall time of the busiest worker: "
        "near 1.0 the client, not the server, limits the run",
    ),
    _lo("client_loop_lag_ms_p90", "ms", "p90 lateness of a 5 ms event-loop probe (delays every timestamp)"),
    _lo("client_loop_lag_ms_p99", "ms", "p99 lateness of a 5 ms event-loop probe"),
    _lo("client_send_lag_ms_p90", "ms", "p90 of actual - scheduled dispatch time of requests"),
    _lo("client_send_lag_ms_p99", "ms", "p99 of actual - scheduled dispatch time of requests"),
    _lo(
        "client_queue_wait_ms_mean",
        "ms",
        "mean wait for a max-concurrency slot (excluded from TTFT, as sglang)",
    ),
    _hi("client_achieved_rate_ratio", "fraction", "achieved / offered request rate over the arrival schedule"),
    # expert load during a load run (the suite's EPLB counter: --eplb observe|reference|balanced)
    _lo(
        "rank_load_max_over_mean",
        "ratio",
        "routed slots of the busiest simulated expert-parallel rank / the mean over ranks, summed over MoE "
        "layers, during the run (1.0 = perfectly balanced)",
    ),
    _lo(
        "expert_load_max_over_mean",
        "ratio",
        "routed slots of the busiest expert / the mean over experts, in the least balanced MoE layer, during "
        "the run",
    ),
    # cross-check with the reference client
    _lo(
        "reference_diff_pct",
        "%",
        "relative difference between this suite's value and sglang.bench_serving's on the same workload",
    ),
]

METRICS: dict[str, Metric] = {m.name: m for m in _DEFINITIONS}


def get(name: str) -> Metric:
    """The definition of ``name``; unknown names raise a KeyError listing close matches."""
    try:
        return METRICS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, list(METRICS), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown metric {name!r}.{hint}") from None


# -- statistics
# ------------------------------------------------------------------------------------------------


def stat(values: Sequence[float] | Any, which: str) -> float:
    """numpy's mean / median / std (ddof=0) / linear percentile / max; an empty list gives 0 (sglang's rule)."""
    import numpy as np

    if len(values) == 0:
        return 0.0
    arr = np.asarray(values, dtype=float)
    if which == "mean":
        return float(np.mean(arr))
    if which == "median":
        return float(np.median(arr))
    if which == "std":
        return float(np.std(arr))
    if which == "max":
        return float(np.max(arr))
    if which == "min":
        return float(np.min(arr))
    if which.startswith("p"):
        return float(np.percentile(arr, float(which[1:])))
    raise ValueError(f"unknown statistic {which!r}; use mean, median, std, max, min or pNN")


def stats(prefix: str, values_ms: Sequence[float]) -> dict[str, float]:
    """Every statistic of :data:`STATS` for one latency, named ``{prefix}_ms_{stat}``."""
    import numpy as np

    arr = np.asarray(values_ms, dtype=float)  # converted once for all statistics
    return {f"{prefix}_ms_{s}": stat(arr, s) for s in STATS}


# -- per-request values
# ----------------------------------------------------------------------------------------


class RecordLike(Protocol):
    """The fields of a request record the formulas read."""

    success: bool
    prompt_len: int
    max_tokens: int
    start_s: float
    end_s: float
    chunk_s: list[float]
    answer_s: float | None
    usage_completion_tokens: int | None
    retok_len: int | None


def output_len(r: RecordLike) -> int:
    """sglang's output length: the server's ``usage.completion_tokens`` when streamed, else the requested length."""
    if not r.success:
        return 0
    return r.usage_completion_tokens if r.usage_completion_tokens is not None else r.max_tokens


def ttft_s(r: RecordLike) -> float | None:
    """Seconds to the first chunk carrying text; None when the request failed or streamed no text."""
    return r.chunk_s[0] - r.start_s if r.success and r.chunk_s else None


def latency_s(r: RecordLike) -> float:
    return r.end_s - r.start_s


def itl_s(r: RecordLike) -> list[float]:
    """Gaps between consecutive text chunks (one sample per chunk, not per token: sglang's ITL)."""
    c = r.chunk_s
    return [c[i] - c[i - 1] for i in range(1, len(c))] if r.success else []


def tpot_s(r: RecordLike) -> float | None:
    """(e2e - ttft) / (output_len - 1), or None when the request has at most one output token."""
    first = ttft_s(r)
    n = output_len(r)
    if first is None or n <= 1:
        return None
    return (latency_s(r) - first) / (n - 1)


# -- goodput
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoodputSlo:
    """Per-request limits of vLLM's ``--goodput`` (DistServe): a request is good when it meets every one given."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    @property
    def empty(self) -> bool:
        return self.ttft_ms is None and self.tpot_ms is None and self.e2e_ms is None

    def good(self, r: RecordLike) -> bool:
        if not r.success:
            return False
        first = ttft_s(r)
        if self.ttft_ms is not None and (first is None or first * 1000 > self.ttft_ms):
            return False
        tpot = tpot_s(r) or 0.0  # vLLM: "we regard tpot as 0 for goodput" when output <= 1 token
        if self.tpot_ms is not None and tpot * 1000 > self.tpot_ms:
            return False
        return not (self.e2e_ms is not None and latency_s(r) * 1000 > self.e2e_ms)


# -- the run summary
# -------------------------------------------------------------------------------------------


@dataclass
class Summary:
    """Aggregates of one load run: metric name -> value, plus the per-request samples behind each latency."""

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

    def sample_count(self, metric: str) -> int:
        """How many samples stand behind ``metric`` (e.g. requests behind ``tpot_ms_p99``)."""
        return len(self.samples.get(metric.split("_ms_")[0], [])) if "_ms_" in metric else self.completed

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


def _bins_peak(records: Sequence[RecordLike]) -> tuple[float, float]:
    """sglang's peak output tok/s (chunk events per 1-s bin) and peak concurrent requests (per 1-s bin)."""
    import numpy as np

    ok = [r for r in records if r.success]
    if not ok:
        return 0.0, 0.0
    t0 = min(r.start_s for r in ok)
    events = np.fromiter((t for r in ok for t in r.chunk_s), dtype=float)
    peak_events = float(np.bincount((events - t0).astype(np.int64)).max()) if events.size else 0.0
    starts = np.array([int(r.start_s - t0) for r in ok])
    ends = np.array([int(r.end_s - t0) for r in ok])
    active = np.zeros(int(ends.max()) + 2, dtype=np.int64)
    np.add.at(active, starts, 1)
    np.add.at(active, ends + 1, -1)
    return peak_events, float(np.cumsum(active).max())


WINDOW_S = 1.0
"""Width of the windows behind throughput samples (sglang's peak uses the same 1-s bins)."""


def window_output_tok_s(records: Sequence[RecordLike], window_s: float = WINDOW_S) -> list[float]:
    """Output tok/s in each full ``window_s`` window between the first request's start and the last one's end.

    Each request's output tokens are spread evenly over its streamed chunks (a chunk may carry several tokens
    under MTP); the last, partial window is dropped. These are the samples the regression gate tests
    throughput on: one run's windows vary with the server's speed the way its aggregate does.
    """
    import numpy as np

    ok = [r for r in records if r.success and r.chunk_s]
    if not ok:
        return []
    t0 = min(r.start_s for r in ok)
    full_windows = int((max(r.end_s for r in ok) - t0) // window_s)
    if full_windows < 1:
        return []
    times = np.concatenate([np.asarray(r.chunk_s, dtype=float) for r in ok])
    weights = np.concatenate([np.full(len(r.chunk_s), output_len(r) / len(r.chunk_s)) for r in ok])
    bins = ((times - t0) // window_s).astype(np.int64)
    keep = bins < full_windows
    tokens = np.bincount(bins[keep], weights=weights[keep], minlength=full_windows)
    return [float(t) / window_s for t in tokens]


def summarize(
    records: Sequence[RecordLike], duration_s: float, *, devices: int = 1, goodput: GoodputSlo | None = None
) -> Summary:
    """Every aggregate metric of one run, with sglang.bench_serving's exact formulas (bench_tools.md (c))."""
    import numpy as np

    ok = [r for r in records if r.success]
    d = duration_s if duration_s > 0 else float("nan")
    ttfts = [t * 1000 for r in ok if (t := ttft_s(r)) is not None]
    tpots = [t * 1000 for r in ok if (t := tpot_s(r)) is not None]
    gaps = [np.diff(np.asarray(r.chunk_s, dtype=float)) for r in ok if len(r.chunk_s) > 1]
    itls: list[float] = (np.concatenate(gaps) * 1000).tolist() if gaps else []
    e2es = [latency_s(r) * 1000 for r in ok]
    ttfats = [(r.answer_s - r.start_s) * 1000 for r in ok if r.answer_s is not None]
    total_in = sum(r.prompt_len for r in ok)
    total_out = sum(output_len(r) for r in ok)
    total_retok = sum(r.retok_len or 0 for r in ok)
    values: dict[str, float] = {}
    for prefix, samples in (
        ("ttft", ttfts),
        ("tpot", tpots),
        ("itl", itls),
        ("e2e", e2es),
        ("ttfat", ttfats),
    ):
        values.update(stats(prefix, samples))
    values["output_tok_s"] = total_out / d
    values["output_tok_s_retokenized"] = total_retok / d
    values["input_tok_s"] = total_in / d
    values["total_tok_s"] = (total_in + total_out) / d
    values["request_throughput_req_s"] = len(ok) / d
    values["qpm"] = 60.0 * len(ok) / d
    values["concurrency_mean"] = sum(latency_s(r) for r in ok) / d
    values["output_tok_s_per_device"] = values["output_tok_s"] / devices
    values["total_tok_s_per_device"] = values["total_tok_s"] / devices
    values["input_tok_s_per_device"] = values["input_tok_s"] / devices
    mean_tpot = values["tpot_ms_mean"]
    values["output_tok_s_per_user"] = 1000.0 / mean_tpot if mean_tpot > 0 else 0.0
    values["peak_output_tok_s"], values["peak_concurrent_requests"] = _bins_peak(records)
    values["duration_s"] = duration_s
    values["completed_requests"] = float(len(ok))
    values["failed_requests"] = float(len(records) - len(ok))
    values["error_rate"] = (len(records) - len(ok)) / len(records) if records else 0.0
    mismatched = [r for r in ok if r.usage_completion_tokens is not None and r.usage_completion_tokens != r.max_tokens]
    values["output_len_mismatch_fraction"] = len(mismatched) / len(ok) if ok else 0.0
    if goodput is not None and not goodput.empty:
        good = sum(1 for r in records if goodput.good(r))
        values["goodput_req_s"] = good / d
        values["goodput_fraction"] = good / len(records) if records else 0.0
    for name, value in values.items():
        if isinstance(value, float) and math.isnan(value):
            values[name] = 0.0
    windows = window_output_tok_s(records)
    return Summary(
        values=values,
        samples={"ttft": ttfts, "tpot": tpots, "itl": itls, "e2e": e2es, "ttfat": ttfats, "output_tok_s": windows},
        completed=len(ok),
        failed=len(records) - len(ok),
        total_input=total_in,
        total_output=total_out,
        total_output_retokenized=total_retok,
        duration_s=duration_s,
    )


_WINDOWED = frozenset(
    {"output_tok_s", "output_tok_s_per_device", "total_tok_s", "total_tok_s_per_device", "qpm",
     "request_throughput_req_s"}
)
"""Throughput metrics whose samples are the per-window output tok/s scaled by the run's ratio of the metric to
output tok/s (a ratio the workload fixes)."""


def metric_samples(summary: Summary, metric: str) -> list[float]:
    """The samples behind ``metric`` (for ``dsbench_gate.record(samples=...)``): per request for latencies,
    per 1-s window for throughputs, empty where a run has no such samples."""
    if "_ms_" in metric:
        return list(summary.samples.get(metric.split("_ms_")[0], []))
    if metric in _WINDOWED:
        windows = summary.samples.get("output_tok_s", [])
        output = summary.values.get("output_tok_s", 0.0)
        if not windows or output <= 0:
            return []
        scale = summary.values.get(metric, 0.0) / output
        return [w * scale for w in windows]
    return []


def describe(names: Iterable[str]) -> list[str]:
    """One line per metric: name, unit, direction and definition (for docs and ``--help`` style listings)."""
    return [f"{m.name} [{m.unit}, {m.direction.replace('_', ' ')}]: {m.definition}" for m in map(get, names)]
