"""Is the client the bottleneck? A run whose client could not keep up is INVALID: an error, never a pass.

The figures (bench_tools.md (b) 8, what inference-perf and AIPerf check in part):

* runnable fraction = (CPU time + run-queue wait) / wall time of a worker's loop thread: near 1 the worker
  wanted the CPU all the time, either saturated or starved by other processes on its core;
* event-loop lag: lateness of a 5 ms probe; every chunk timestamp is late by up to this much (judged on the
  p90: a host's rare hiccups only widen the tails, a client that cannot keep up is late on most wake-ups; under
  100 probes on the median; under 5 only over half a second or more, where so few wake-ups are themselves
  the lag: a starved loop wakes a few times a second);
* send lag: how late requests were dispatched against the arrival schedule (finite rates: with rate = inf
  every request is due at once and creating them all takes a moment by design);
* achieved vs offered request rate over the schedule (finite rates, schedules of at least a second: over a
  shorter one a few milliseconds of lag swing the ratio, and the send lag judges it instead);
* late start: a worker that began after the agreed start time.

Queue wait for a max-concurrency slot is reported but is not a client fault: the server holds the slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_dsbench.load.records import RequestRecord
from pytest_dsbench.load.worker import PROBE_INTERVAL_S, WorkerStats
from pytest_dsbench.metrics import stat


@dataclass(frozen=True)
class ClientLimits:
    """Thresholds beyond which the client, not the server, is what a run measured."""

    runnable_fraction_max: float = 0.90
    loop_lag_ms_p90_max: float = 10.0
    send_lag_ms_p90_max: float = 25.0
    achieved_rate_ratio_min: float = 0.90
    achieved_rate_min_span_s: float = 1.0
    late_start_s_max: float = 0.5
    min_observed_s: float = 1.0
    min_lag_probes: int = 100
    #: Fewer loop probes than this (a run of a fraction of a second) cannot show a persistent lag: one hiccup
    #: of a shared host is half of a two-probe median. The send lag, the CPU and the wake-up count judge it.
    min_median_lag_probes: int = 5
    #: A worker that ran this long and still woke fewer than ``min_median_lag_probes`` times was starved: its
    #: 5 ms probe came back every ``wall_s / probes`` instead.
    few_probes_observed_s: float = 0.5


@dataclass
class ClientCheck:
    """The client's health over one run and the verdict."""

    values: dict[str, float]
    problems: list[str] = field(default_factory=list)
    workers: list[dict[str, Any]] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems

    def message(self) -> str:
        """One line for a test failure: why the run is INVALID and what to do."""
        return (
            "INVALID run, the load generator was the bottleneck: "
            + "; ".join(self.problems)
            + ". Give the client more CPU (--load-workers, fewer other processes on its cores) "
            "or lower the load."
        )


def check(
    records: Sequence[RequestRecord],
    stats: Sequence[WorkerStats],
    offered_rate: float | None,
    limits: ClientLimits | None = None,
    *,
    closed_loop: bool = False,
) -> ClientCheck:
    """Judge the client from the workers' figures and the requests' dispatch times.

    ``offered_rate`` is None when every request is due at once; ``closed_loop`` (a max-concurrency limit)
    means requests wait for slots anyway, so a late dispatch is not judged (the loop lag and CPU still are).
    """
    limits = limits or ClientLimits()
    runnable = []
    cpu = []
    observed = max((s.wall_s for s in stats), default=0.0)
    for s in stats:
        if s.wall_s > 0:
            cpu.append(s.cpu_s / s.wall_s)
            if s.run_delay_s is not None:
                runnable.append((s.cpu_s + s.run_delay_s) / s.wall_s)
    lags = [lag for s in stats for lag in s.loop_lag_ms]
    send_lags = [r.send_lag_s * 1000 for r in records]
    waits = [r.queue_wait_s * 1000 for r in records]
    values = {
        "client_cpu_util": max(cpu, default=0.0),
        "client_runnable_fraction": max(runnable, default=0.0),
        "client_loop_lag_ms_p90": stat(lags, "p90"),
        "client_loop_lag_ms_p99": stat(lags, "p99"),
        "client_send_lag_ms_p90": stat(send_lags, "p90"),
        "client_send_lag_ms_p99": stat(send_lags, "p99"),
        "client_queue_wait_ms_mean": stat(waits, "mean"),
    }
    problems: list[str] = []
    if offered_rate is not None and len(records) > 1:
        dispatched = sorted(r.dispatched_s for r in records)
        span = dispatched[-1] - dispatched[0]
        achieved = (len(records) - 1) / span if span > 0 else float("inf")
        values["client_achieved_rate_ratio"] = min(1.0, achieved / offered_rate) if offered_rate > 0 else 1.0
        scheduled_span = (len(records) - 1) / offered_rate if offered_rate > 0 else 0.0
        judged = scheduled_span >= limits.achieved_rate_min_span_s  # short schedules: the send lag decides
        if judged and values["client_achieved_rate_ratio"] < limits.achieved_rate_ratio_min:
            problems.append(
                f"achieved request rate {achieved:.3g}/s is {values['client_achieved_rate_ratio']:.0%} "
                f"of the offered {offered_rate:.3g}/s (expected >= "
                f"{limits.achieved_rate_ratio_min:.0%})"
            )
    # A run shorter than a second (or with few loop probes) is judged by its send lag only: one scheduling
    # hiccup of a busy host would otherwise decide the verdict.
    long_enough = observed >= limits.min_observed_s
    if long_enough and values["client_runnable_fraction"] > limits.runnable_fraction_max:
        problems.append(
            f"a worker thread was runnable {values['client_runnable_fraction']:.0%} of the time "
            f"(CPU {values['client_cpu_util']:.0%}; expected <= {limits.runnable_fraction_max:.0%})"
        )
    # The typical wake-up (p90), not the rare hiccup of a shared host, decides: a starved or saturated client
    # is late on most wake-ups. With few probes only a persistent lag (the median) counts.
    lag_stat = "p90" if len(lags) >= limits.min_lag_probes else "p50"
    lag = values["client_loop_lag_ms_p90"] if lag_stat == "p90" else stat(lags, "median")
    if len(lags) >= limits.min_median_lag_probes:
        if lag > limits.loop_lag_ms_p90_max:
            problems.append(
                f"event-loop lag {lag_stat} {lag:.1f} ms (expected <= {limits.loop_lag_ms_p90_max:g} ms; "
                f"{len(lags)} probes)"
            )
    else:  # every worker woke fewer times than the minimum: one that ran long enough to wake more was starved
        starved = next((s for s in stats if s.wall_s >= limits.few_probes_observed_s), None)
        if starved is not None:
            probes = len(starved.loop_lag_ms)
            problems.append(
                f"event-loop lag: worker {starved.worker} woke {probes} times in {starved.wall_s:.2f} s, every "
                f"{starved.wall_s / max(probes, 1) * 1000:.0f} ms instead of every {PROBE_INTERVAL_S * 1000:g} ms "
                f"(expected <= {limits.loop_lag_ms_p90_max:g} ms late)"
            )
    send_stat = "p90" if len(send_lags) >= limits.min_lag_probes // 5 else "p50"
    send_lag = values["client_send_lag_ms_p90"] if send_stat == "p90" else stat(send_lags, "median")
    if offered_rate is not None and not closed_loop and send_lag > limits.send_lag_ms_p90_max:
        problems.append(
            f"send lag {send_stat} {send_lag:.1f} ms "
            f"(expected <= {limits.send_lag_ms_p90_max:g} ms; {len(send_lags)} requests)"
        )
    late = max((s.late_start_s for s in stats), default=0.0)
    if late > limits.late_start_s_max:
        problems.append(
            f"a worker started {late:.2f} s after the agreed start (expected <= {limits.late_start_s_max:g} s)"
        )
    workers = [
        {
            "worker": s.worker,
            "host": s.host,
            "pid": s.pid,
            "nice": s.nice,
            **({"ray_node": s.ray_node} if s.ray_node else {}),
            "loop": s.loop,
            "wall_s": round(s.wall_s, 4),
            "cpu_s": round(s.cpu_s, 4),
            "total_cpu_s": round(s.total_cpu_s, 4),
            "run_delay_s": None if s.run_delay_s is None else round(s.run_delay_s, 4),
            "loop_lag_ms_p99": round(stat(s.loop_lag_ms, "p99"), 3),
            "events": s.events,
            "late_start_s": round(s.late_start_s, 4),
        }
        for s in stats
    ]
    return ClientCheck(values=values, problems=problems, workers=workers)
