"""Load workers as Ray tasks on a real Ray cluster: a local one this module starts (``ray.init`` with two CPUs),
which the load runs and an inner pytest connect to like any cluster. Skipped when ray is not installed."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_dsbench.load.datasets import DatasetSpec
from pytest_dsbench.load.executors import LoadExecutorError, RayExecutor
from pytest_dsbench.load.records import read_jsonl
from pytest_dsbench.load.runner import LoadConfig, run_load
from pytest_dsbench.load.tokenizer import CharTokenizer
from pytest_dsbench.load.worker import PlannedRequest, WorkerPlan
from pytest_dsbench.testing.fake_process import ServerProcess

TTFT_MS, ITL_MS = 50.0, 10.0


RAY_TOKEN = Path.home() / ".ray" / "auth_token"
"""Where Ray keeps the token of clusters it starts (read at import: pytester moves HOME for inner runs)."""


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A fresh local Ray cluster of two CPUs (``address="local"``: never one already running); its GCS address."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'pytest-dsbench[ray]')")
    context = ray.init(
        address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False
    )
    try:
        yield str(context.address_info["gcs_address"])
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def timed_fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("fake") / "fake.log"
    with ServerProcess.fake_engine({"ttft_ms": TTFT_MS, "itl_ms": ITL_MS, "max_model_len": 4096}, log) as server:
        yield server


def test_ray_workers_run_on_the_cluster_and_merge_their_records(ray_cluster: str, timed_fake: ServerProcess) -> None:
    cfg = LoadConfig(
        base_url=timed_fake.base_url,
        model="fake-r1",
        dataset=DatasetSpec("random", 8, 32, 16, 1.0, seed=1),
        max_concurrency=4,
        workers=2,
        settle_s=0.0,
    )
    run = run_load(cfg, CharTokenizer(), executor=RayExecutor(ray_cluster))
    assert run.summary.completed == 8 and run.valid, run.client
    assert [r.index for r in run.records] == list(range(8)) and {r.worker for r in run.records} == {0, 1}
    assert run.client is not None and all(ray_worker_process(w["pid"]) for w in run.client.workers)
    # the server's delays, measured by workers of another process (loose above: Ray's own start-up shares the cores)
    assert TTFT_MS <= run.summary["ttft_ms_median"] <= TTFT_MS * 3, run.summary["ttft_ms_median"]
    assert ITL_MS * 0.9 <= run.summary["tpot_ms_mean"] <= ITL_MS * 3, run.summary["tpot_ms_mean"]


def test_ray_workers_are_processes_of_the_cluster_not_of_pytest(ray_cluster: str, timed_fake: ServerProcess) -> None:
    plans = [plan(w, timed_fake.base_url) for w in (0, 1)]
    results = RayExecutor(ray_cluster).run(plans)
    assert [r.stats.worker for r in results] == [0, 1]
    assert os.getpid() not in {r.stats.pid for r in results}
    assert all(ray_worker_process(r.stats.pid) for r in results)
    assert {r.stats.ray_node for r in results} == {ray_node_of_this_process()}
    if os.geteuid() == 0:  # may raise its priority: not preempted by everything else on the host (Ray's nice 15)
        assert [r.stats.nice for r in results] == [0, 0]
    assert all(r.records[0].success for r in results), [r.records[0].error for r in results]


def ray_worker_process(pid: int) -> bool:
    """True when ``pid`` is a worker process of the Ray cluster (Ray titles them ``ray::<task>`` or ``ray::IDLE``)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::")
    except OSError:
        return sys.platform != "linux"  # no /proc to look in: the pid check above stands alone


def ray_node_of_this_process() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


def plan(worker: int, base_url: str = "http://127.0.0.1:9") -> WorkerPlan:
    body = b'{"model":"fake-r1","prompt":"x","max_tokens":2,"stream":true}'
    request = (
        b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return WorkerPlan(
        worker=worker, base_url=base_url, requests=[PlannedRequest(worker, 0.0, request, 1, 2)], timeout_s=10.0
    )


def test_a_ray_worker_that_fails_before_the_start_is_reported_in_one_line(ray_cluster: str) -> None:
    bad = plan(0)
    bad.cpu_affinity = (10_000,)  # no such CPU: the worker fails while it sets up
    with pytest.raises(LoadExecutorError, match=r"^a Ray load worker failed before the start: .*(OSError|Invalid)"):
        RayExecutor(ray_cluster).run([bad])


def test_workers_the_cluster_cannot_place_fail_after_the_ready_timeout_naming_the_cpus(ray_cluster: str) -> None:
    expected = (
        r"1 of 1 Ray load worker\(s\) not ready after 2 s \(the cluster has 2 CPU\(s\) free; each worker takes 3\)"
    )
    with pytest.raises(LoadExecutorError, match=expected):
        RayExecutor(ray_cluster, num_cpus=3, ready_timeout_s=2).run([plan(0)])


def test_the_cli_runs_a_throughput_workload_on_the_ray_cluster(
    ray_cluster: str, run_small_random_workload: Callable[..., pytest.RunResult], fake: Any, pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if RAY_TOKEN.is_file():
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(RAY_TOKEN))
    server = fake(ttft_ms=5, itl_ms=5)
    result = run_small_random_workload(
        server.base_url, "--load-executor", "ray", "--ray-address", ray_cluster, "--load-workers", "2",
        subprocess=True,
    )
    result.assert_outcomes(passed=1)
    header, records = read_jsonl(next((pytester.path / "artifacts" / "load").glob("*.jsonl")))
    assert len(records) == 8 and header["workload"]["workers"] == 2
    assert len(header["client"]["workers"]) == 2
    node = ray_node_of_this_process()
    assert [w["ray_node"] for w in header["client"]["workers"]] == [node, node]  # tasks of the test's cluster


def test_without_ray_the_executor_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"--load-executor ray .*pip install 'pytest-dsbench\[ray\]'"):
        RayExecutor().run([plan(0)])
