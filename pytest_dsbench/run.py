"""The run: the one object that owns a pytest session's dsbench state, with the session's hooks as its methods.

Built in ``pytest_configure`` and registered as the ``dsbench-run`` plugin (as pytest-benchmark registers its
``BenchmarkSession`` and pytest-xdist its ``DSession``). It holds the resolved options, the hardware profile, the
engine session, the recorded results and the history (baseline and regression judge). Everything below it
(engines, load, metrics, gate, history, report) is a library that is handed what it needs: nothing there reads
``pytest.Config``. Fixtures and the suite's own ``pytest_generate_tests`` reach the run through :meth:`of`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_dsbench.gate import Gate, Judgement
from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.results import InvalidResult, MetricResult, RunResults
from pytest_dsbench.session import EngineSession
from pytest_dsbench.thresholds import HardwareProfile

if TYPE_CHECKING:
    from pytest_dsbench.history.session import HistorySession

PLUGIN_NAME = "dsbench-run"


class PytestTerminal:
    """pytest's terminal reporter as a :class:`pytest_dsbench.progress.Terminal`, with capture suspended around
    each write so that load-run progress is seen live."""

    def __init__(self, config: pytest.Config) -> None:
        self._config = config

    def _plugin(self, name: str) -> Any:
        return self._config.pluginmanager.get_plugin(name)

    @contextlib.contextmanager
    def _uncaptured(self) -> Iterator[Any]:
        capman = self._plugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext():
            yield self._plugin("terminalreporter")

    def available(self) -> bool:
        return self._plugin("terminalreporter") is not None

    def can_rewrite(self) -> bool:
        reporter = self._plugin("terminalreporter")
        capture = getattr(self._config.option, "capture", "fd")
        return reporter is not None and bool(reporter.isatty()) and capture == "no"

    def write_line(self, text: str) -> None:
        with self._uncaptured() as reporter:
            reporter.write_line(text)

    def rewrite(self, text: str, *, final: bool) -> None:
        with self._uncaptured() as reporter:
            reporter.rewrite(text, erase=True)
            if final:
                reporter.write("\n", flush=True)
            else:
                reporter.flush()


class DsbenchRun:
    """Options, hardware profile, engine, results and history of one pytest session."""

    def __init__(self, config: pytest.Config, options: DsbenchOptions, hw: HardwareProfile) -> None:
        from pytest_dsbench.history import session as history

        self.config = config
        self.options = options
        self.hw = hw
        self.results = RunResults()
        self.engine = EngineSession(options, hw, options.artifacts_dir.resolve())
        self.history: HistorySession = history.configure(options, hw, identity=self._engine_identity)

    @staticmethod
    def of(config: pytest.Config) -> DsbenchRun:
        """The run of ``config``; a usage error when pytest configured without one (``--dsbench-list-hw``)."""
        run = DsbenchRun.find(config)
        if run is None:
            raise pytest.UsageError("pytest-dsbench is not configured in this session (is -p no:dsbench set?)")
        return run

    @staticmethod
    def find(config: pytest.Config) -> DsbenchRun | None:
        """The run of ``config``, or None when there is none."""
        run = config.pluginmanager.get_plugin(PLUGIN_NAME)
        return run if isinstance(run, DsbenchRun) else None

    # -- what fixtures hand out --------------------------------------------------------------------------------
    @property
    def judge(self) -> Callable[[MetricResult], Judgement] | None:
        """The regression judge against the stored baseline, when ``--dsbench-compare`` chose one."""
        comparator = self.history.comparator
        return comparator.compare if comparator is not None else None

    def gate(self, test_id: str) -> Gate:
        """A fresh verdict for one test, recording into this run's results."""
        return Gate(test_id=test_id, results=self.results, judge=self.judge)

    def _engine_identity(self) -> dict[str, object] | None:
        info = self.engine.info
        return dict(info.identity()) if info is not None else None

    # -- hooks -------------------------------------------------------------------------------------------------
    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        opts = self.options
        target = f"attach {opts.base_url}" if opts.attach else "start (embedded tiny-r1)" if not opts.model else \
            f"start {opts.model}"
        return [
            f"dsbench: engine={opts.engine} hw={opts.hw} ({self.hw.path}) mode={target} eplb={opts.eplb} "
            f"artifacts={opts.artifacts_dir}"
        ]

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        from pytest_dsbench.selection import apply_engine_marks

        apply_engine_marks(items, self.options, self.hw)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """Attach mode: an unreachable ``--base-url`` is a one-line usage error before any test runs."""
        if not self.options.attach or session.config.option.collectonly:
            return
        if any(_uses_engine(item) for item in session.items):
            self.engine.attach_check()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """Fail fast once the engine the suite launched has exited: before any fixture of the test runs, so a
        module-scoped fixture (reference outputs, a load run's warmup) never meets the dead port itself."""
        from pytest_dsbench.errors import EngineDied

        if _uses_engine(item):
            message = self.engine.exit_message()
            if message is not None:
                raise EngineDied(message)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        from pytest_dsbench.errors import EngineDied, InvalidRun, MissingExtra
        from pytest_dsbench.load.executors import LoadExecutorError

        report = yield
        excinfo = call.excinfo
        if excinfo is not None and excinfo.errisinstance((EngineDied, InvalidRun, LoadExecutorError, MissingExtra)):
            report.longrepr = str(excinfo.value)  # the message says it all: no traceback wall
            if excinfo.errisinstance(InvalidRun):
                self.results.invalid.append(InvalidResult(item.nodeid, str(excinfo.value)))
        elif excinfo is not None and report.failed and call.when in ("setup", "call") and _uses_engine(item):
            died = self.engine.died_during(_what_ran(item))
            if died is not None:
                report.longrepr = died
        setattr(item, f"rep_{report.when}", report)
        return report

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int | pytest.ExitCode) -> None:
        from pytest_dsbench import report
        from pytest_dsbench.engines.launcher import stop_all
        from pytest_dsbench.history import session as history

        self.engine.stop()
        stop_all()
        if hasattr(session.config, "workerinput") or not (self.results.items or self.results.invalid):
            return  # a pytest-xdist worker: the controller owns the run; nothing recorded: nothing to report
        doc = history.store(
            self.history, self.results.items, self.options, self.hw, self.engine.info,
            invalid=self.results.invalid,
            invocation_args=tuple(session.config.invocation_params.args), cwd=Path(session.config.rootpath),
            exitstatus=exitstatus,
        )
        try:
            self.history.report_paths = report.write_reports(self.options.artifacts_dir, doc, self.history)
        except OSError as exc:
            self.history.warnings.append(f"could not write the reports to {self.options.artifacts_dir}: {exc}")

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        from pytest_dsbench.report import write_terminal_summary

        write_terminal_summary(
            terminalreporter, engine=self.engine.info, hw=self.options.hw, results=self.results,
            history=self.history,
        )


def _uses_engine(item: pytest.Item) -> bool:
    return "dsbench_engine" in getattr(item, "fixturenames", ())


def _what_ran(item: pytest.Item) -> str:
    """What was running when the engine died: the conformance check, by its id, with the requests it sent last
    (the one that killed the engine is among them), or the test."""
    from pytest_dsbench.conformance.context import ApiContext

    marker = item.get_closest_marker("check")
    if marker is None or not marker.args:
        return f"test {item.name}"
    ctx = getattr(item, "funcargs", {}).get("api")
    sent = list(ctx.api.recent) if isinstance(ctx, ApiContext) else []
    return f"check {marker.args[0]}" + (f" (its last requests: {'; '.join(sent)})" if sent else "")
