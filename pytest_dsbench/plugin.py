"""pytest entry point (``pytest11: dsbench``): options, and the run object that owns the session.

``pytest_configure`` resolves the options, loads the hardware profile and registers a
:class:`~pytest_dsbench.run.DsbenchRun`, whose methods are the session's hooks; fixtures live in
:mod:`pytest_dsbench.fixtures`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_dsbench import options as _options

MARKERS = {
    "api": "OpenAI / DeepSeek API conformance check",
    "accuracy": "accuracy floor through EvalScope (skipped while a routing patch is active)",
    "eplb": "expert-load-balance patch equivalence",
    "slo": "latency SLO from thresholds/<hw>.toml",
    "throughput": "throughput workload from thresholds/<hw>.toml",
    "gpu": "needs an NVIDIA GPU",
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
    if not config.pluginmanager.has_plugin("dsbench-fixtures"):
        config.pluginmanager.register(fixtures, "dsbench-fixtures")


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
