"""Shared helpers for the self-tests: fake engines in-process or behind an engine-interpreter shim, and inner
pytest runs of a conformance test file against a server on a small hardware profile named ``fake``."""

from __future__ import annotations

# imported before pytester snapshots sys.modules: a first import inside an in-process run is dropped with its
# snapshot, and the next one makes a second BufferWrapper class the process workers cannot pickle
import multiprocessing.heap  # noqa: F401
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpcore  # noqa: F401  (imported before pytester snapshots sys.modules: httpx caches its classes)
import pytest

from pytest_dsbench.suite import SUITE_DIR
from pytest_dsbench.testing.fake_engine import FakeConfig, FakeEngineThread
from pytest_dsbench.testing.fake_process import ServerProcess
from pytest_dsbench.testing.shim import write_engine_shim


@pytest.fixture
def fake_engine() -> Iterator[FakeEngineThread]:
    """A compliant fake engine on a loopback port."""
    with FakeEngineThread(FakeConfig()) as engine:
        yield engine


@pytest.fixture
def make_fake_engine() -> Iterator[Callable[..., FakeEngineThread]]:
    """Start fake engines with given FakeConfig fields; all are stopped after the test."""
    started: list[FakeEngineThread] = []

    def make(**fields: Any) -> FakeEngineThread:
        engine = FakeEngineThread(FakeConfig(**fields)).__enter__()
        started.append(engine)
        return engine

    yield make
    for engine in started:
        engine.__exit__(None, None, None)


@pytest.fixture
def engine_shim(tmp_path: Path) -> Callable[..., Path]:
    """Write an ``--engine-python`` stand-in that serves a fake engine when the suite 'launches' one."""

    def make(config: dict[str, Any] | None = None, *, spawn_child: bool = False,
             supervisor_exit_delay_s: float | None = None) -> Path:
        return write_engine_shim(tmp_path / "shim", config, spawn_child=spawn_child,
                                 supervisor_exit_delay_s=supervisor_exit_delay_s)

    return make


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start fake engines in processes of their own (timing not shared with the client's GIL); all stopped after."""
    started: list[ServerProcess] = []

    def start(**config: Any) -> ServerProcess:
        server = ServerProcess.fake_engine({"max_model_len": 4096, **config}, tmp_path / f"fake{len(started)}.log")
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop()


CONFORMANCE = SUITE_DIR
"""The conformance suite's test files (shipped in the package), which the inner runs execute."""

FAKE_HARDWARE = """schema_version = 1
[hardware]
name = "fake"
accelerator = "fake"
devices = {devices}
memory_gib_per_device = 1
"""

LAX_EVIDENCE = """[evidence]
min_duration_s = 0.0
min_samples = 1
tail_samples = 0
consistency_tolerance_pct = 1000.0
"""
"""The fake profile's minimum evidence unless a test's profile sets its own: the fakes' runs last a fraction of
a second, and a test of something else must not turn INVALID (the evidence rules have tests of their own)."""


@pytest.fixture
def run_on_fake_hw(pytester: pytest.Pytester) -> Callable[..., pytest.RunResult]:
    """Run ``pytest_dsbench/suite/<test_file>`` in an inner pytest, attached to ``base_url``, with ``--hw fake``.

    ``profile`` is the hardware profile below its ``[hardware]`` table (``[deployment]``, ``[slo]``,
    ``[throughput.*]``; ``[evidence]`` is :data:`LAX_EVIDENCE` unless it has its own); results go to
    ``<pytester.path>/artifacts``; ``args`` are passed on. ``subprocess``: the inner pytest runs in a process of
    its own (it must not share this process's state, e.g. its Ray connection).
    """

    def run(
        test_file: str,
        base_url: str,
        profile: str,
        *args: str,
        devices: int = 1,
        tokenizer: str = "chars",
        subprocess: bool = False,
    ) -> pytest.RunResult:
        folder = pytester.path / "profiles"
        folder.mkdir(exist_ok=True)
        evidence = "" if "[evidence]" in profile else LAX_EVIDENCE
        (folder / "fake.toml").write_text(
            FAKE_HARDWARE.format(devices=devices) + evidence + profile, encoding="utf-8"
        )
        runpytest = pytester.runpytest_subprocess if subprocess else pytester.runpytest
        return runpytest(
            str(CONFORMANCE / test_file),
            *("--base-url", base_url, "--tokenizer", tokenizer, "--hw", "fake"),
            *("--dsbench-thresholds", str(folder), "--dsbench-artifacts", str(pytester.path / "artifacts")),
            *("-p", "no:cacheprovider", "-rfEs"),
            *args,
        )

    return run


SMALL_RANDOM_WORKLOAD = """[deployment]
max_model_len = 4096
max_input_len = 2048
[throughput.random_small]
method = "random"
input_len = 32
output_len = 16
num_prompts = 8
max_concurrency = 4
output_tok_s_min = {output_min}
"""


@pytest.fixture
def run_small_random_workload(run_on_fake_hw: Callable[..., pytest.RunResult]) -> Callable[..., pytest.RunResult]:
    """Run ``test_throughput.py`` with one ``method = "random"`` workload (8 prompts of 32 tokens, 16 out, 4 at a
    time) held to ``output_min`` output tok/s; other arguments as :func:`run_on_fake_hw`'s."""

    def run(base_url: str, *args: str, output_min: float = 1.0, subprocess: bool = False) -> pytest.RunResult:
        profile = SMALL_RANDOM_WORKLOAD.format(output_min=output_min)
        return run_on_fake_hw("test_throughput.py", base_url, profile, *args, subprocess=subprocess)

    return run


GIL_HOG = """
import sys, threading

import pytest

_hogging = threading.Event()
_stop = threading.Event()

def _hog():
    while not _stop.is_set():
        _hogging.wait(0.05)
        while _hogging.is_set():
            sum(range(20000))

def pytest_configure(config):
    sys.setswitchinterval(0.1)
    threading.Thread(target=_hog, daemon=True).start()

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    _hogging.set()  # the load runs in the tests' module fixtures, so during the setup phase

@pytest.hookimpl(tryfirst=True)
def pytest_runtest_makereport(item, call):
    _hogging.clear()  # the report, its traceback read from source files, is not what is starved

def pytest_unconfigure(config):
    _hogging.clear()
    _stop.set()
    sys.setswitchinterval(0.005)
"""


@pytest.fixture
def starve_client(pytester: pytest.Pytester) -> tuple[str, ...]:
    """Inner-run arguments loading a plugin that hogs the interpreter during each test's setup (where the load
    runs), so the load client falls behind."""
    pytester.makepyfile(gilhog=GIL_HOG)
    pytester.syspathinsert()
    return ("-p", "gilhog")
