"""End-of-run summary: the engine's identity and one table of every SLO, throughput and accuracy result."""

from __future__ import annotations

import pytest

from pytest_dsbench.stash import ENGINE_SESSION, RESULTS


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"


def write_terminal_summary(reporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Print the engine identity and the results table (plain text: stable for grep and CI logs)."""
    session = config.stash.get(ENGINE_SESSION, None)
    results = config.stash.get(RESULTS, None)
    if session is None or session.info is None:
        return
    info = session.info
    reporter.write_sep("=", "dsbench")
    reporter.write_line(
        f"engine {info.name} {info.version} ({info.mode} {info.base_url}) model={info.model} "
        f"max_model_len={info.max_model_len} hw={session.options.hw} eplb={info.eplb_mode}"
    )
    if info.log_paths:
        reporter.write_line("engine log: " + ", ".join(str(p) for p in info.log_paths))
    if not results or not results.items:
        return
    header = f"{'test':48s} {'metric (unit)':28s} {'measured':>10s} {'limit':>12s} {'n':>6s} {'change':>8s}  verdict"
    reporter.write_line(header)
    for item in results.items:
        verdict = {True: "PASS", False: "FAIL", None: "-"}[item.passed]
        limit = f"{item.comparison} {_fmt(item.limit)}" if item.limit is not None else "-"
        change = f"{item.change_pct:+.1f}%" if item.change_pct is not None else "-"
        reporter.write_line(
            f"{item.test_id[-48:]:48s} {item.metric + ' (' + item.unit + ')':28s} {_fmt(item.value):>10s} "
            f"{limit:>12s} {item.samples:>6d} {change:>8s}  {verdict}"
        )
