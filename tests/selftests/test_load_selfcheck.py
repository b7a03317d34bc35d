"""The client self-check and the worker executors: when the client is the bottleneck, and where workers run."""

from __future__ import annotations

from typing import Any

import pytest

from pytest_dsbench.load.executors import LoadExecutorError, ProcessExecutor
from pytest_dsbench.load.records import RequestRecord
from pytest_dsbench.load.selfcheck import ClientLimits, check
from pytest_dsbench.load.worker import PlannedRequest, WorkerPlan, WorkerStats


def stats(**kw: Any) -> WorkerStats:
    base: dict[str, Any] = {
        "worker": 0,
        "wall_s": 10.0,
        "cpu_s": 1.0,
        "run_delay_s": 0.1,
        "loop_lag_ms": [0.5] * 100,
    }
    base.update(kw)
    return WorkerStats(**base)


def records(n: int = 10, gap_s: float = 0.1, lag_s: float = 0.0) -> list[RequestRecord]:
    return [
        RequestRecord(
            index=i,
            prompt_len=1,
            max_tokens=1,
            scheduled_s=i * gap_s,
            dispatched_s=i * gap_s + lag_s * i / n,
            start_s=i * gap_s + 0.01,
            end_s=i * gap_s + 1,
            success=True,
        )
        for i in range(n)
    ]


def test_a_relaxed_client_is_valid() -> None:
    result = check(records(), [stats()], offered_rate=10.0)
    assert result.valid and result.problems == []
    assert result.values["client_cpu_util"] == pytest.approx(0.1)
    assert result.values["client_achieved_rate_ratio"] == pytest.approx(1.0)


def test_a_worker_runnable_all_the_time_is_the_bottleneck() -> None:
    result = check(records(), [stats(cpu_s=4.0, run_delay_s=5.5)], offered_rate=None)
    assert not result.valid
    assert "runnable 95% of the time (CPU 40%; expected <= 90%)" in result.message()


def test_event_loop_lag_beyond_the_limit_is_the_bottleneck() -> None:
    result = check(records(), [stats(loop_lag_ms=[1.0] * 80 + [30.0] * 20)], offered_rate=None)
    assert "event-loop lag p90 30.0 ms (expected <= 10 ms; 100 probes)" in result.message()


def test_rare_loop_hiccups_of_a_busy_host_only_widen_the_tails() -> None:
    result = check(records(), [stats(loop_lag_ms=[1.0] * 95 + [80.0] * 5)], offered_rate=None)
    assert result.valid and result.values["client_loop_lag_ms_p99"] > 50


def test_late_dispatches_fail_a_finite_rate_run() -> None:
    result = check(records(n=20, lag_s=2.0), [stats()], offered_rate=10.0)
    assert any(p.startswith("achieved request rate") for p in result.problems)
    assert any(p.startswith("send lag p90") for p in result.problems)


def test_send_lag_is_not_judged_when_everything_is_due_at_once() -> None:
    assert check(records(gap_s=0.0, lag_s=0.5), [stats()], offered_rate=None).valid


def test_a_worker_that_started_late_is_reported() -> None:
    assert "started 2.00 s after the agreed start" in check(records(), [stats(late_start_s=2.0)], None).message()


def test_limits_are_configurable() -> None:
    strict = ClientLimits(loop_lag_ms_p90_max=0.1)
    assert not check(records(), [stats()], None, strict).valid


def test_invalid_message_says_what_to_do() -> None:
    message = check(records(), [stats(cpu_s=9.5, run_delay_s=0.4)], None).message()
    assert message.startswith("INVALID run, the load generator was the bottleneck: ")
    assert "--load-workers" in message


def plan(worker: int, base_url: str = "http://127.0.0.1:9") -> WorkerPlan:
    return WorkerPlan(
        worker=worker, base_url=base_url, requests=[PlannedRequest(worker, 0.0, b"x", 1, 1)], timeout_s=1.0
    )


def test_process_workers_report_a_failing_worker_in_one_line() -> None:
    bad = plan(0)
    bad.cpu_affinity = (10_000,)  # no such CPU: the worker fails before it is ready
    with pytest.raises(LoadExecutorError, match=r"load worker 0 failed: (OSError|ValueError)"):
        ProcessExecutor(ready_timeout_s=60).run([bad])


def test_process_workers_return_results_in_plan_order() -> None:
    results = ProcessExecutor().run([plan(0), plan(1)])
    assert [r.stats.worker for r in results] == [0, 1]
    assert [r.records[0].index for r in results] == [0, 1]


def test_rate_shortfall_over_a_short_schedule_is_left_to_the_send_lag() -> None:
    result = check(records(n=5, gap_s=0.01, lag_s=0.01), [stats()], offered_rate=100.0)
    assert result.values["client_achieved_rate_ratio"] < 0.9 and result.valid


def test_two_loop_probes_cannot_show_a_persistent_lag() -> None:
    short = dict(wall_s=0.3, cpu_s=0.01, run_delay_s=0.28)
    assert check(records(), [stats(loop_lag_ms=[5.0, 85.0], **short)], None).valid  # a median of 45 ms
    assert not check(records(), [stats(loop_lag_ms=[60.0] * 5, **short)], None).valid


def test_a_loop_that_woke_twice_in_a_second_was_starved_however_few_its_probes() -> None:
    starved = check(records(), [stats(loop_lag_ms=[300.0, 400.0], wall_s=1.0, cpu_s=0.01, run_delay_s=0.0)], None)
    assert "worker 0 woke 2 times in 1.00 s, every 500 ms instead of every 5 ms" in starved.message()


def test_one_hiccup_in_a_short_run_is_not_a_bottleneck_but_a_persistent_lag_is() -> None:
    short = dict(wall_s=0.3, cpu_s=0.01, run_delay_s=0.28)
    assert check(records(), [stats(loop_lag_ms=[0.5] * 9 + [90.0], **short)], None).valid
    starved = check(records(), [stats(loop_lag_ms=[60.0] * 10, **short)], None)
    assert "event-loop lag p50 60.0 ms" in starved.message()


def test_slo_workload_defaults_to_tencent_and_rejects_an_unknown_name() -> None:
    from pytest_dsbench import thresholds
    from pytest_dsbench.errors import DsbenchUsageError
    from pytest_dsbench.load.api import slo_workload

    profile = thresholds.load("cpu")
    entry = slo_workload(profile)
    assert entry is not None and entry[0] == "tencent"
    broken = profile.model_copy(update={"slo": profile.slo.model_copy(update={"workload": "nope"})})
    expected = r"\[slo\] workload = 'nope' is not a \[throughput\.\*\] entry"
    with pytest.raises(DsbenchUsageError, match=expected):
        slo_workload(broken)


def test_late_dispatch_is_not_judged_when_requests_wait_for_concurrency_slots() -> None:
    result = check(records(n=20, lag_s=2.0), [stats()], offered_rate=10.0, closed_loop=True)
    assert not any(p.startswith("send lag") for p in result.problems)
