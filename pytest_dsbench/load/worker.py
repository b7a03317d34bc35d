"""One load worker: sends its share of the requests on schedule and returns records plus its own health figures.

A worker is a plain function of a picklable :class:`WorkerPlan` returning a picklable :class:`WorkerResult`,
so any executor can host it: a thread, a local process (:mod:`pytest_dsbench.load.executors`), or a Ray task
on another host. Times in the result are seconds from the run's start, which the executor fixes with
``start_wall`` (``time.time()``); each worker converts it to its own monotonic clock once.

Besides the requests, a worker measures what could make the client the bottleneck: the lateness of a 5 ms
event-loop probe, the lag of each dispatch against the schedule, the wait for a concurrency slot, its CPU time
and (Linux) the time its loop thread was runnable but not running (``/proc/thread-self/schedstat``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

from pytest_dsbench.load.http import Pool, Response, Target
from pytest_dsbench.load.readback import parse_stream
from pytest_dsbench.load.records import RequestRecord

PROBE_INTERVAL_S = 0.005
PARSE_BUDGET_BYTES = 256 * 1024 * 1024


@dataclass
class PlannedRequest:
    """One request of a worker's share: serialised HTTP bytes and when it is due."""

    index: int
    scheduled_s: float
    data: bytes
    prompt_len: int
    max_tokens: int


@dataclass
class WorkerPlan:
    """Everything a worker needs; picklable (the API key is inside the request bytes and never printed)."""

    worker: int
    base_url: str
    requests: list[PlannedRequest]
    chat: bool = False
    max_concurrency: int | None = None
    timeout_s: float = 600.0
    start_wall: float | None = None
    cpu_affinity: tuple[int, ...] | None = None
    use_uvloop: bool = True
    keep_text: bool = True
    warm_connections: int = 0
    deadline_s: float | None = None
    finished: Any = None
    """A shared ``multiprocessing.Value`` counting finished requests (for live progress), or None."""


@dataclass
class WorkerStats:
    """The worker's own health over the measured run."""

    worker: int
    wall_s: float = 0.0
    cpu_s: float = 0.0
    total_cpu_s: float = 0.0
    run_delay_s: float | None = None
    loop_lag_ms: list[float] = field(default_factory=list)
    late_start_s: float = 0.0
    events: int = 0
    unsent: int = 0
    bytes_received: int = 0
    loop: str = "asyncio"
    host: str = ""
    """The client host the worker ran on (several with the Ray executor), and its process id there."""
    pid: int = 0
    ray_node: str = ""
    """The id of the Ray node the worker ran on (the ray executor), else empty."""
    nice: int = 0
    """The worker thread's nice value (a preemptible worker explains an INVALID run)."""


@dataclass
class WorkerResult:
    records: list[RequestRecord]
    stats: WorkerStats


def _schedstat() -> tuple[float, float] | None:
    """(CPU seconds, run-queue wait seconds) of the calling thread, or None off Linux."""
    try:
        fields = Path("/proc/thread-self/schedstat").read_text().split()
        return int(fields[0]) / 1e9, int(fields[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


def _loop_factory(use_uvloop: bool) -> tuple[Callable[[], asyncio.AbstractEventLoop], str]:
    if use_uvloop:
        try:
            import uvloop

            return uvloop.new_event_loop, "uvloop"
        except ImportError:
            pass
    return asyncio.new_event_loop, "asyncio"


async def _probe(lags: list[float], stop: asyncio.Event) -> None:
    """Event-loop lateness: how much later than asked a 5 ms sleep returns (every timestamp suffers it)."""
    while not stop.is_set():
        due = perf_counter() + PROBE_INTERVAL_S
        await asyncio.sleep(PROBE_INTERVAL_S)
        lags.append(max(0.0, perf_counter() - due) * 1000)


async def _pool(plan: WorkerPlan) -> Pool:
    """The worker's connection pool, with keep-alive connections opened before the start (not timed)."""
    pool = Pool(Target.parse(plan.base_url), connect_timeout_s=min(10.0, plan.timeout_s))
    if plan.warm_connections:
        await pool.warm(min(plan.warm_connections, len(plan.requests)))
    return pool


async def _run(plan: WorkerPlan, stats: WorkerStats, pool: Pool) -> list[RequestRecord]:
    sem = asyncio.Semaphore(plan.max_concurrency) if plan.max_concurrency else None
    done: list[tuple[PlannedRequest, float, float, Response | RequestRecord]] = []
    buffered = [0]
    base = perf_counter()
    if plan.start_wall is not None:  # the monotonic instant of the agreed start, the same for every worker
        delay = plan.start_wall - time.time()
        base += delay
        stats.late_start_s = max(0.0, -delay)
        if delay > 0:
            await asyncio.sleep(delay)

    def to_record(req: PlannedRequest, dispatched: float, st: float, resp: Response) -> RequestRecord:
        parsed = parse_stream(resp, chat=plan.chat, origin=base)  # times from the run's start
        stats.events += parsed.events
        return RequestRecord(
            index=req.index,
            prompt_len=req.prompt_len,
            max_tokens=req.max_tokens,
            worker=plan.worker,
            scheduled_s=req.scheduled_s,
            dispatched_s=dispatched - base,
            start_s=st - base,
            chunk_s=parsed.chunk_s,
            answer_s=parsed.answer_s,
            end_s=parsed.end_s if resp.end_s or parsed.events else perf_counter() - base,
            success=not parsed.error,
            error=parsed.error,
            http_status=resp.status,
            events=parsed.events,
            usage_prompt_tokens=parsed.usage_prompt_tokens,
            usage_completion_tokens=parsed.usage_completion_tokens,
            text=parsed.text if plan.keep_text else "",
        )

    deadline = None if plan.deadline_s is None else base + plan.deadline_s

    async def one(req: PlannedRequest, dispatched: float) -> None:
        if sem is not None:
            async with sem:
                st = perf_counter()
                if deadline is not None and st > deadline:  # the run's time is up: not sent, not a failure
                    stats.unsent += 1
                    return
                resp = await pool.request(req.data, plan.timeout_s)
        else:
            st = perf_counter()
            resp = await pool.request(req.data, plan.timeout_s)
        if plan.finished is not None:
            with plan.finished.get_lock():
                plan.finished.value += 1
        size = sum(len(p) for _, p in resp.pieces)
        stats.bytes_received += size
        if buffered[0] + size > PARSE_BUDGET_BYTES:  # bound memory: read this one back now
            done.append((req, dispatched, st, to_record(req, dispatched, st, resp)))
        else:
            buffered[0] += size
            done.append((req, dispatched, st, resp))

    stop = asyncio.Event()
    probe = asyncio.create_task(_probe(stats.loop_lag_ms, stop))
    cpu0, sched0, wall0 = time.thread_time(), _schedstat(), perf_counter()
    tasks = []
    ordered = sorted(plan.requests, key=lambda r: r.scheduled_s)
    for n, req in enumerate(ordered):
        wait = base + req.scheduled_s - perf_counter()
        if deadline is not None and base + req.scheduled_s > deadline:
            stats.unsent += len(ordered) - n
            break
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(req, perf_counter())))
    await asyncio.gather(*tasks)
    stats.wall_s = perf_counter() - wall0
    stats.cpu_s = time.thread_time() - cpu0
    sched1 = _schedstat()
    if sched0 is not None and sched1 is not None:
        stats.run_delay_s = sched1[1] - sched0[1]
    stop.set()
    await probe
    pool.close()
    records = [item if isinstance(item, RequestRecord) else to_record(req, d, st, item) for req, d, st, item in done]
    stats.total_cpu_s = time.thread_time() - cpu0  # sending, receiving and reading the streams back
    return sorted(records, key=lambda r: r.index)


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to the hard limit (as sglang.bench_serving does): every
    stream holds a socket, and the common default of 1024 would cap a worker near a thousand streams."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65535)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return int(soft)


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else 0


def run_worker(plan: WorkerPlan, ready: Callable[[], float | None] | None = None) -> WorkerResult:
    """Run one worker to completion in the calling thread (it must not have a running event loop).

    ``ready`` (optional) is called once the worker is set up (loop built, connections open); it may block
    until all workers are ready and return the agreed ``start_wall``.
    """
    raise_open_files_limit()
    restore = None
    if plan.cpu_affinity and hasattr(os, "sched_setaffinity"):
        restore = os.sched_getaffinity(0)
        os.sched_setaffinity(0, set(plan.cpu_affinity))
    factory, loop_name = _loop_factory(plan.use_uvloop)
    stats = WorkerStats(
        worker=plan.worker, loop=loop_name, host=socket.gethostname(), pid=os.getpid(), nice=_nice()
    )
    gc_enabled = gc.isenabled()
    gc.disable()  # a collector pause would delay every timestamp taken meanwhile
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            pool = runner.run(_pool(plan))
            if ready is not None:
                start_wall = ready()
                if start_wall is not None:
                    plan.start_wall = start_wall
            records = runner.run(_run(plan, stats, pool))
    finally:
        if gc_enabled:
            gc.enable()
        if restore is not None:
            os.sched_setaffinity(0, restore)
    return WorkerResult(records=records, stats=stats)


def run_worker_in_thread(plan: WorkerPlan, ready: Callable[[], float | None] | None = None) -> WorkerResult:
    """Run a worker on a fresh thread (safe to call from code that already runs an event loop)."""
    box: dict[str, WorkerResult | BaseException] = {}

    def target() -> None:
        try:
            box["result"] = run_worker(plan, ready=ready)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"dsbench-load-worker-{plan.worker}", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    result = box["result"]
    assert isinstance(result, WorkerResult)
    return result
