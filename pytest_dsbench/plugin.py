"""pytest entry point (``pytest11: dsbench``): options, and the run object that owns the session.

``pytest_configure`` resolves the options, loads the hardware profile and registers a
:class:`~pytest_dsbench.run.DsbenchRun`, whose methods are the session's hooks; fixtures live in
:mod:`pytest_dsbench.fixtures`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import pytest

from pytest_dsbench import options as _options

MARKERS = {
    "api": "OpenAI / DeepSeek API conformance check",
    "accuracy": "accuracy floor through EvalScope (skipped while a routing patch is active)",
    "eplb": "expert-load-balance patch equivalence",
    "slo": "latency SLO from thresholds/<hw>.toml",
    "throughput": "throughput workload from thresholds/<hw>.toml",
    "gpu": "needs an NVIDIA GPU",
    "modules": "per-module microbenchmarks of DeepSeek-R1 (tests/modules; --dsbench-modules-scale)",
    "fixture_model": "depends on the fixture model's trained answers (reference outputs, reasoning split)",
    "slow": "takes minutes (launches extra engines or trains a model)",
    "requires(*features)": "skip unless the engine profile declares every feature",
    "check(check_id)": "conformance check id; known engine bugs for it become strict xfails",
    "only_engine(*names)": "run only on these engines",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    _options.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    for marker, text in MARKERS.items():
        config.addinivalue_line("markers", f"{marker}: {text}")
    from pytest_dsbench import fixtures, progress, thresholds
    from pytest_dsbench.run import PLUGIN_NAME, DsbenchRun, PytestTerminal

    opts = _options.resolve(config)
    if opts.list_hw:
        return
    run = DsbenchRun(config, opts, thresholds.load(opts.hw, opts.thresholds_dir))
    config.pluginmanager.register(run, PLUGIN_NAME)
    config.add_cleanup(lambda: config.pluginmanager.unregister(run, PLUGIN_NAME))
    progress.bind(PytestTerminal(config))
    config.add_cleanup(progress.unbind)
    config.add_cleanup(_interrupt_on_sigterm())
    if not config.pluginmanager.has_plugin("dsbench-fixtures"):
        config.pluginmanager.register(fixtures, "dsbench-fixtures")


def _interrupt_on_sigterm() -> Callable[[], None]:
    """``timeout``, CI runners and Kubernetes stop a run with SIGTERM, which would kill pytest at once and leave
    the launched engine (its own process group) running and the run unstored. Treated as Ctrl-C instead, the
    session finishes: engines are stopped and the run is stored, marked interrupted. A handler someone else
    installed is kept; the returned function restores the previous one."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) not in (
        signal.SIG_DFL, None
    ):
        return lambda: None

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def pytest_cmdline_main(config: pytest.Config) -> int | None:
    if not config.getoption("dsbench_list_hw", default=None):
        return None
    from pytest_dsbench import thresholds

    directory_opt = _options.raw_value(config, "dsbench_thresholds")
    directory = Path(directory_opt) if directory_opt else thresholds.default_dir()
    print(f"hardware profiles in {directory}:")
    for line in thresholds.describe_all(directory):
        print("  " + line)
    return 0
