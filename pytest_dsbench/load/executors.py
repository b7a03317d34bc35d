"""Where load workers run: a thread, local processes, or a Ray cluster, behind one small interface.

An executor takes the workers' plans and returns their results; it owns the start barrier. The process
executor starts every worker, waits until all report ready (imports done, loop built), then announces a start
time 50 ms ahead, so process start-up never counts as client lag. The Ray executor does the same on a cluster
through a barrier actor, with a start announced ``start_ahead_s`` ahead (a worker that starts later anyway
reports it as ``late_start_s`` and the self-check flags it). ``--load-executor`` picks one
(:func:`make_executor`).

A caller may hold the barrier with a :data:`StartGate`: once every worker is ready, the gate blocks until the
run may begin and names its start (the side-by-side comparison starts this suite's client with the reference
tool's main run this way).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pytest_dsbench.errors import MissingExtra
from pytest_dsbench.load.worker import WorkerPlan, WorkerResult, run_worker, run_worker_in_thread
from pytest_dsbench.options import LOAD_EXECUTORS

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


class _StartBarrier:
    """A Ray actor (made remote at run time): workers arrive once set up and wait for the start the driver
    announces, so worker start-up on any host never counts as client lag."""

    def __init__(self) -> None:
        import asyncio

        self.arrived = 0
        self.start_wall = 0.0
        self.released = asyncio.Event()

    async def arrive(self) -> float:
        self.arrived += 1
        await self.released.wait()
        return self.start_wall

    async def count(self) -> int:
        return self.arrived

    async def release(self, start_wall: float) -> None:
        self.start_wall = start_wall
        self.released.set()


def _undo_ray_niceness() -> None:
    """Ray starts its workers at nice 15 (the raylet's ``worker_niceness``): on a client host that runs anything
    else the load workers would be preempted and every run INVALID. A worker thread takes the priority a process
    worker has (nice 0) where the host allows it (root, or ``RLIMIT_NICE``), else keeps Ray's; start the client
    nodes with ``RAY_worker_niceness=0`` then. The thread's nice value is in the run's worker figures."""
    if hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, 0)  # Linux: 0 is the calling thread, the one that runs the loop


def _ray_worker(plan: WorkerPlan, barrier: Any) -> WorkerResult:
    """A Ray task: one worker, set up, then held at the barrier until the announced start."""
    import ray

    _undo_ray_niceness()
    result = run_worker(plan, ready=lambda: float(ray.get(barrier.arrive.remote())))
    result.stats.ray_node = str(ray.get_runtime_context().get_node_id())
    return result


def import_ray() -> Any:
    """``ray``, or :class:`MissingExtra` naming the extra that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise MissingExtra("ray", "ray", "--load-executor ray (load workers on a Ray cluster)") from exc
    return ray


class RayExecutor:
    """Workers as Ray tasks, spread over the cluster's nodes: load from several client hosts at once.

    Connects with ``ray.init(address=address)`` unless Ray is initialised already (``address`` None: Ray's own
    default, ``$RAY_ADDRESS`` or else a new single-host instance). Every node needs pytest-dsbench installed,
    the same version as the driver's. The workers set up (loop, warm connections), report at a barrier actor,
    and start together ``start_ahead_s`` after the last one arrived; times are relative to that start, so hosts
    need NTP-level clock agreement (well under the latencies being measured) for cross-host merges.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        ready_timeout_s: float = 120.0,
        start_ahead_s: float = 0.5,
        num_cpus: float = 1.0,
    ) -> None:
        self.address = address
        self.ready_timeout_s = ready_timeout_s
        self.start_ahead_s = start_ahead_s
        self.num_cpus = num_cpus

    def connect(self) -> RayExecutor:
        """Connect now (``ray.init`` belongs on the main thread; :meth:`run` is called on a helper thread)."""
        self._connect(import_ray())
        return self

    def _connect(self, ray: Any) -> None:
        if ray.is_initialized():
            return
        try:
            ray.init(address=self.address, logging_level="WARNING", log_to_driver=False)
        except Exception as exc:  # ConnectionError, AuthenticationError, ValueError, ...: one line, no traceback
            where = self.address or "$RAY_ADDRESS / a new local instance"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LoadExecutorError(
                f"cannot connect to the Ray cluster at {where}: {reason}. Start one (ray start --head) or fix "
                "--ray-address."
            ) from None

    def run(self, plans: Sequence[WorkerPlan], start: StartGate | None = None) -> list[WorkerResult]:
        ray = import_ray()
        self._connect(ray)
        barrier = ray.remote(num_cpus=0)(_StartBarrier).remote()
        task = ray.remote(num_cpus=self.num_cpus, max_retries=0, scheduling_strategy="SPREAD")(_ray_worker)
        finished = plans[0].finished if plans else None
        for plan in plans:
            plan.finished = None  # a local shared counter cannot travel to other hosts; counted as results come
        refs = [task.remote(plan, barrier) for plan in plans]
        try:
            self._await_ready(ray, barrier, refs)
            start_wall = max(start(), time.time()) if start is not None else time.time() + self.start_ahead_s
            ray.get(barrier.release.remote(start_wall))
            return self._collect(ray, plans, refs, finished)
        except BaseException:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise
        finally:
            ray.kill(barrier)

    def _await_ready(self, ray: Any, barrier: Any, refs: list[Any]) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while (arrived := int(ray.get(barrier.count.remote()))) < len(refs):
            done, _ = ray.wait(refs, num_returns=1, timeout=0.2)
            if done:
                self._get(ray, done[0], "before the start")
                raise LoadExecutorError("a Ray load worker finished before the start")
            if time.monotonic() > deadline:
                free = ray.available_resources().get("CPU", 0)
                raise LoadExecutorError(
                    f"{len(refs) - arrived} of {len(refs)} Ray load worker(s) not ready after "
                    f"{self.ready_timeout_s:g} s (the cluster has {free:g} CPU(s) free; each worker takes "
                    f"{self.num_cpus:g}). Add nodes or lower --load-workers."
                )

    def _collect(self, ray: Any, plans: Sequence[WorkerPlan], refs: list[Any], finished: Any) -> list[WorkerResult]:
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            result: WorkerResult = self._get(ray, done[0], "during the run")
            if finished is not None:
                with finished.get_lock():
                    finished.value += len(result.records)
        return [self._get(ray, ref, "during the run") for ref in refs]

    @staticmethod
    def _get(ray: Any, ref: Any, when: str) -> Any:
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            first = str(exc).strip().splitlines()
            raise LoadExecutorError(f"a Ray load worker failed {when}: {type(exc).__name__}: "
                                    f"{first[-1] if first else ''}") from None


def make_executor(kind: str, ray_address: str | None = None) -> Executor:
    """The executor ``--load-executor`` names (one of :data:`~pytest_dsbench.options.LOAD_EXECUTORS`)."""
    if kind == "ray":
        return RayExecutor(ray_address).connect()
    if kind == "process":
        return ProcessExecutor()
    if kind == "thread":
        return ThreadExecutor()
    raise ValueError(f"unknown load executor {kind!r}; valid: {', '.join(LOAD_EXECUTORS)}")


def default_executor(workers: int) -> Executor:
    """One worker runs on a thread; more run in processes."""
    return ThreadExecutor() if workers <= 1 else ProcessExecutor()
