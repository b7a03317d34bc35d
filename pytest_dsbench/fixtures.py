"""Session fixtures, layered like pytest-httpserver: run -> options -> hardware profile -> engine -> clients.

Override ``dsbench_engine`` in a conftest to point the suite at something else; every check depends only on
the layers below it.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pytest_dsbench._http import auth_headers, timeout
from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.errors import DsbenchUsageError, EngineStartError
from pytest_dsbench.gate import Gate
from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.results import RunResults
from pytest_dsbench.run import DsbenchRun
from pytest_dsbench.suite import stable_test_id
from pytest_dsbench.thresholds import HardwareProfile


@pytest.fixture(scope="session")
def dsbench_run(pytestconfig: pytest.Config) -> DsbenchRun:
    """The run object: options, hardware profile, engine session, results and history of this session."""
    return DsbenchRun.of(pytestconfig)


@pytest.fixture(scope="session")
def dsbench_options(dsbench_run: DsbenchRun) -> DsbenchOptions:
    """The resolved, validated command-line and ini options."""
    return dsbench_run.options


@pytest.fixture(scope="session")
def hw_profile(dsbench_run: DsbenchRun) -> HardwareProfile:
    """The hardware profile chosen with ``--hw`` (deployment, limits, SLOs, workloads, floors)."""
    return dsbench_run.hw


@pytest.fixture(scope="session")
def thresholds(hw_profile: HardwareProfile) -> HardwareProfile:
    """The limits of the hardware profile; the same object as ``hw_profile``, named for readability."""
    return hw_profile


@pytest.fixture(scope="session")
def dsbench_results(dsbench_run: DsbenchRun) -> RunResults:
    """Where tests record measured values for the summary table and history."""
    return dsbench_run.results


@pytest.fixture(scope="session")
def dsbench_engine(dsbench_run: DsbenchRun) -> EngineInfo:
    """The engine under test, launched on first use (start mode) or attached with ``--base-url``."""
    try:
        return dsbench_run.engine.ensure()
    except EngineStartError as exc:
        pytest.exit(f"dsbench: {exc}", returncode=pytest.ExitCode.TESTS_FAILED)
    except DsbenchUsageError as exc:
        pytest.exit(f"dsbench: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture(scope="session")
def openai_client(dsbench_engine: EngineInfo, dsbench_options: DsbenchOptions) -> Iterator[httpx.Client]:
    """An ``httpx.Client`` rooted at the engine (paths like ``/v1/chat/completions``), with timeouts."""
    with httpx.Client(
        base_url=dsbench_engine.base_url,
        timeout=timeout(dsbench_options.request_timeout_s),
        headers=auth_headers(dsbench_engine.api_key),
    ) as client:
        yield client


@pytest.fixture
def async_openai_client(dsbench_engine: EngineInfo, dsbench_options: DsbenchOptions) -> Iterator[httpx.AsyncClient]:
    """An ``httpx.AsyncClient`` rooted at the engine; use it inside ``asyncio.run`` in the test.

    Per test, not per session: an async client belongs to the event loop it first ran in, and each
    ``asyncio.run`` makes a new loop.
    """
    client = httpx.AsyncClient(
        base_url=dsbench_engine.base_url,
        timeout=timeout(dsbench_options.request_timeout_s),
        headers=auth_headers(dsbench_engine.api_key),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
    )
    yield client
    if not client.is_closed:
        asyncio.run(client.aclose())


def _slug(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", nodeid).strip("-")[:150]


@pytest.fixture
def dsbench_artifacts(
    request: pytest.FixtureRequest, dsbench_options: DsbenchOptions, dsbench_test_id: str
) -> Iterator[Path]:
    """A folder for this test's files (records, logs, plots); removed when the test passes, kept on failure."""
    folder = dsbench_options.artifacts_dir / "tests" / _slug(dsbench_test_id)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.passed:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def dsbench_test_id(request: pytest.FixtureRequest) -> str:
    """The id results are stored and compared under: the same for a suite test collected from a checkout or from
    an installed package (:func:`~pytest_dsbench.suite.stable_test_id`)."""
    return stable_test_id(request.node.path, request.node.nodeid)


@pytest.fixture
def dsbench_gate(dsbench_test_id: str, dsbench_run: DsbenchRun) -> Gate:
    """Record measured values with their limits; ``check()`` fails the test on any violation or regression."""
    return dsbench_run.gate(dsbench_test_id)
