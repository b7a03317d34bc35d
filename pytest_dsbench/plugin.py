"""pytest entry point (``pytest11: dsbench``): options, configuration, selection and the end-of-run summary.

Only hooks live here; fixtures are in :mod:`pytest_dsbench.fixtures`, option handling in
:mod:`pytest_dsbench.options`, and the engine lifecycle in :mod:`pytest_dsbench.session`.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest

from pytest_dsbench import options as _options

MARKERS = {
    "api": "OpenAI / DeepSeek API conformance check",
    "accuracy": "accuracy floor through EvalScope (skipped while a routing patch is active)",
    "eplb": "expert-load-balance patch equivalence",
    "slo": "latency SLO from thresholds/<hw>.toml",
    "throughput": "throughput baseline from thresholds/<hw>.toml",
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
    from pytest_dsbench import fixtures, thresholds
    from pytest_dsbench.results import RunResults
    from pytest_dsbench.session import EngineSession
    from pytest_dsbench.stash import ENGINE_SESSION, OPTIONS, PROFILE, RESULTS

    opts = _options.resolve(config)
    config.stash[OPTIONS] = opts
    if opts.list_hw:
        return
    profile = thresholds.load(opts.hw, opts.thresholds_dir)
    config.stash[PROFILE] = profile
    config.stash[RESULTS] = RunResults()
    config.stash[ENGINE_SESSION] = EngineSession(opts, profile, opts.artifacts_dir.resolve())
    from pytest_dsbench.history import session as history

    history.configure(config, opts, profile, config.stash[RESULTS])
    from pytest_dsbench import progress

    progress.bind(config)
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


def pytest_report_header(config: pytest.Config) -> list[str]:
    from pytest_dsbench.stash import OPTIONS, PROFILE

    opts = config.stash.get(OPTIONS, None)
    profile = config.stash.get(PROFILE, None)
    if opts is None or profile is None:
        return []
    target = f"attach {opts.base_url}" if opts.attach else "start (embedded tiny-r1)" if not opts.model else \
        f"start {opts.model}"
    return [
        f"dsbench: engine={opts.engine} hw={opts.hw} ({profile.path}) mode={target} eplb={opts.eplb} "
        f"artifacts={opts.artifacts_dir}"
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from pytest_dsbench.engines.registry import get_adapter
    from pytest_dsbench.session import has_gpu
    from pytest_dsbench.stash import OPTIONS

    opts = config.stash.get(OPTIONS, None)
    if opts is None:
        return
    profile = get_adapter(opts.engine).behaviour
    gpu = None
    for item in items:
        only = item.get_closest_marker("only_engine")
        if only and opts.engine not in only.args:
            reason = f"only for engine(s) {', '.join(only.args)}; this is {opts.engine}"
            item.add_marker(pytest.mark.skip(reason=reason))
        required = item.get_closest_marker("requires")
        if required:
            missing = sorted(set(required.args) - profile.features)
            if missing:
                item.add_marker(pytest.mark.skip(
                    reason=f"engine {opts.engine} does not support feature(s): {', '.join(missing)}"))
        check = item.get_closest_marker("check")
        if check and check.args:
            known = profile.known_failure(str(check.args[0]))
            if known:
                item.add_marker(pytest.mark.xfail(strict=True, reason=f"{known.reason} ({known.url})"))
        if item.get_closest_marker("gpu"):
            gpu = has_gpu() if gpu is None else gpu
            if not gpu:
                item.add_marker(pytest.mark.skip(reason="needs an NVIDIA GPU; none is visible"))
        if item.get_closest_marker("accuracy") or item.get_closest_marker("fixture_model"):
            from pytest_dsbench.eplb import accuracy_skip_reason

            patched = accuracy_skip_reason(opts.eplb)
            if patched:
                item.add_marker(pytest.mark.skip(reason=patched))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Attach mode: an unreachable ``--base-url`` is a one-line usage error before any test runs."""
    from pytest_dsbench.stash import ENGINE_SESSION, OPTIONS

    opts = session.config.stash.get(OPTIONS, None)
    if opts is None or not opts.attach or session.config.option.collectonly:
        return
    if any("dsbench_engine" in getattr(item, "fixturenames", ()) for item in session.items):
        session.config.stash[ENGINE_SESSION].attach_check()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                                          pytest.TestReport]:
    from pytest_dsbench.errors import InvalidRun

    report = yield
    if call.excinfo is not None and call.excinfo.errisinstance(InvalidRun):
        report.longrepr = str(call.excinfo.value)  # the message says it all: no traceback wall
    setattr(item, f"rep_{report.when}", report)
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int | pytest.ExitCode) -> None:
    from pytest_dsbench.engines.launcher import stop_all
    from pytest_dsbench.history import session as history
    from pytest_dsbench.stash import ENGINE_SESSION

    engine_session = session.config.stash.get(ENGINE_SESSION, None)
    if engine_session is not None:
        engine_session.stop()
    stop_all()
    history.finish(session.config, exitstatus)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    from pytest_dsbench.report import write_terminal_summary

    write_terminal_summary(terminalreporter, config)
