"""Where load workers run: a thread, local processes, or a Ray cluster, behind one small interface.

An executor takes the workers' plans and returns their results; it owns the start barrier. The process
executor starts every worker, waits until all report ready (imports done, loop built), then announces a start
time 50 ms ahead, so process start-up never counts as client lag. Ray workers cannot share a barrier, so the
Ray executor announces a start time ``lead_s`` ahead instead (workers that start later report it as
``late_start_s`` and the self-check flags them).

A caller may hold the barrier with a :data:`StartGate`: once every worker is ready, the gate blocks until the
run may begin and names its start (the side-by-side comparison starts this suite's client with the reference
tool's main run this way).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pytest_dsbench.errors import MissingExtra
from pytest_dsbench.load.worker import WorkerPlan, WorkerResult, run_worker, run_worker_in_thread

START_AHEAD_S = 0.05

StartGate = Callable[[], float]
"""Called once all workers are ready; returns when the run may begin, with its start as ``time.time()``."""


class LoadExecutorError(RuntimeError):
    """A worker could not start or died; the message says which and why."""


class Executor(Protocol):
    """Runs worker plans to completion and returns one result per plan, in plan order."""

    def run(self, plans: Sequence[WorkerPlan], start: StartGate | None = None) -> list[WorkerResult]: ...


class ThreadExecutor:
    """Every worker on its own thread of this process (one worker: the common case and the self-tests)."""

    def run(self, plans: Sequence[WorkerPlan], start: StartGate | None = None) -> list[WorkerResult]:
        if len(plans) == 1:
            return [run_worker_in_thread(plans[0], ready=start)]
        import concurrent.futures as cf

        start_wall = start() if start is not None else time.time() + 0.2
        for plan in plans:
            plan.start_wall = start_wall
        with cf.ThreadPoolExecutor(len(plans)) as pool:
            return list(pool.map(run_worker, plans))


def _process_main(plan: WorkerPlan, ready_q: Any, start_v: Any, go: Any, results: Any) -> None:
    """Entry point of a worker process: report ready, wait for the start time, run, send the result back."""
    try:

        def ready() -> float:
            ready_q.put(plan.worker)
            go.wait()
            return float(start_v.value)

        results.put(("ok", plan.worker, run_worker(plan, ready=ready)))
    except BaseException as exc:
        results.put(("error", plan.worker, f"{type(exc).__name__}: {exc}"))


class ProcessExecutor:
    """Each worker in its own process (spawned: safe next to threads), started together through a barrier."""

    def __init__(self, ready_timeout_s: float = 120.0, run_timeout_s: float | None = None) -> None:
        self.ready_timeout_s = ready_timeout_s
        self.run_timeout_s = run_timeout_s

    def run(self, plans: Sequence[WorkerPlan], start: StartGate | None = None) -> list[WorkerResult]:
        ctx = mp.get_context("spawn")
        ready_q, results = ctx.Queue(), ctx.Queue()
        start_v, go = ctx.Value("d", 0.0), ctx.Event()
        procs = [
            ctx.Process(
                target=_process_main,
                args=(p, ready_q, start_v, go, results),
                daemon=True,
                name=f"dsbench-load-worker-{p.worker}",
            )
            for p in plans
        ]
        for proc in procs:
            proc.start()
        try:
            self._await_ready(ready_q, procs, results)
            start_v.value = max(start(), time.time()) if start is not None else time.time() + START_AHEAD_S
            go.set()
            return self._collect(plans, procs, results)
        finally:
            for proc in procs:
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.kill()
                    proc.join(timeout=5)

    def _await_ready(self, ready_q: Any, procs: list[Any], results: Any) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        pending = len(procs)
        while pending:
            try:
                ready_q.get(timeout=0.2)
                pending -= 1
            except queue.Empty:
                self._raise_if_failed(procs, results)
                if time.monotonic() > deadline:
                    raise LoadExecutorError(
                        f"{pending} load worker(s) not ready after {self.ready_timeout_s:g} s"
                    ) from None

    @staticmethod
    def _raise_if_failed(procs: list[Any], results: Any) -> None:
        try:
            kind, worker, payload = results.get_nowait()
        except queue.Empty:
            kind = None
        if kind == "error":
            raise LoadExecutorError(f"load worker {worker} failed: {payload}")
        dead = [p.name for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
        if dead:
            raise LoadExecutorError(f"load worker process(es) {', '.join(dead)} died before reporting a result")

    def _collect(self, plans: Sequence[WorkerPlan], procs: list[Any], results: Any) -> list[WorkerResult]:
        got: dict[int, WorkerResult] = {}
        deadline = None if self.run_timeout_s is None else time.monotonic() + self.run_timeout_s
        while len(got) < len(plans):
            try:
                kind, worker, payload = results.get(timeout=0.5)
            except queue.Empty:
                if any(not p.is_alive() and p.exitcode not in (0, None) for p in procs):
                    raise LoadExecutorError("a load worker process died during the run") from None
                if deadline is not None and time.monotonic() > deadline:
                    raise LoadExecutorError(f"load workers did not finish within {self.run_timeout_s:g} s") from None
                continue
            if kind == "error":
                raise LoadExecutorError(f"load worker {worker} failed: {payload}")
            got[worker] = payload
        return [got[p.worker] for p in plans]


class RayExecutor:
    """Workers as Ray tasks, e.g. on several client hosts when one host cannot drive the load.

    ``ray.init(...)`` is the caller's business (address, runtime env with pytest-dsbench installed). Results
    come back as plain dataclasses; times are relative to the announced start, so hosts need NTP-level clock
    agreement (well under the latencies being measured) for cross-host merges.
    """

    def __init__(self, lead_s: float = 5.0, num_cpus: float = 1.0) -> None:
        self.lead_s = lead_s
        self.num_cpus = num_cpus

    def run(self, plans: Sequence[WorkerPlan], start: StartGate | None = None) -> list[WorkerResult]:
        try:
            import ray
        except ImportError as exc:
            raise MissingExtra("ray", "ray", "running load workers on a Ray cluster") from exc
        remote = ray.remote(num_cpus=self.num_cpus)(run_worker)
        start_wall = max(start(), time.time() + self.lead_s) if start is not None else time.time() + self.lead_s
        for plan in plans:
            plan.start_wall = start_wall
            plan.finished = None  # a local shared counter cannot travel to other hosts
        return list(ray.get([remote.remote(plan) for plan in plans]))


def default_executor(workers: int) -> Executor:
    """One worker runs on a thread; more run in processes."""
    return ThreadExecutor() if workers <= 1 else ProcessExecutor()
