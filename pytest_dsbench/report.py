"""End-of-run reporting: one terminal table of every result, and JSON and HTML reports in the artifacts
folder.

The terminal table is plain, fixed-width text (stable for grep and CI logs): test, metric with unit, measured
value, limit, baseline value, change against the baseline (signed, with "worse"/"better" by the metric's
direction), sample count and verdict (PASS, FAIL = limit missed, REGRESSED = worse than the baseline beyond
noise and the regression limit, ``-`` = recorded only).

``dsbench-report.json`` holds the provenance, every result with its regression judgement and summary
statistics of its samples; ``dsbench-report.html`` is self-contained (inline SVG plots: TPOT/TTFT CDFs against
the baseline, throughput vs concurrency, per-GPU vs per-user Pareto, history of the gated metrics). Without
matplotlib the HTML says which extra to install instead of the plots.

Results of the per-module benchmarks (``tests/modules``) are shown as seed 002's tables instead of rows of the
results table (four figures for each of ~190 benchmarks): in the terminal after it, in the HTML in a section of
their own with a plot of time against tokens per module (:mod:`pytest_dsbench.modules.table`).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pytest_dsbench import _atomic
from pytest_dsbench.modules import table as module_tables
from pytest_dsbench.results import MetricResult, RunResults

if TYPE_CHECKING:
    from pytest_dsbench.engines.base import EngineInfo
    from pytest_dsbench.history.document import StoredRun
    from pytest_dsbench.history.session import HistorySession

JSON_REPORT = "dsbench-report.json"
HTML_REPORT = "dsbench-report.html"
HISTORY_RUNS_IN_REPORT = 30


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def change_text(value: float, baseline: float | None, worse_pct: float | None) -> str:
    """``+12.3% worse`` / ``-4.0% better`` / ``-``: the plain change and what it means for the metric."""
    if baseline == 0 and value == 0:
        return "same"
    if baseline is None or worse_pct is None or baseline == 0:
        return "-"
    raw = (value - baseline) / abs(baseline) * 100.0
    sense = "worse" if worse_pct > 0.05 else "better" if worse_pct < -0.05 else "same"
    return f"{raw:+.1f}% {sense}"


def display_test(
    test_id: str, workload: dict[str, Any], width: int = 48, keys: set[str] | None = None
) -> str:
    """``file.py::test[k=v,...]`` without folders, cut to ``width``; ``keys`` limits the workload label to the
    keys that tell this result apart from the test's others (a sweep's concurrency, a prefill's length)."""
    from pytest_dsbench.history.document import workload_label

    path, sep, name = test_id.partition("::")
    text = f"{path.rsplit('/', 1)[-1]}{sep}{name}"
    shown = workload if keys is None else {k: v for k, v in workload.items() if k in keys}
    label = f"[{workload_label(shown, 200)}]" if shown else ""
    if len(text) + len(label) <= width:
        return text + label
    if len(label) > width // 2:
        label = label[: width // 2 - 4] + "...]"
    room = width - len(label)
    return (text if len(text) <= room else text[: room - 3] + "...") + label


def varying_keys(items: list[tuple[str, str, dict[str, Any]]]) -> dict[tuple[str, str], set[str]]:
    """Per (test, metric): the workload keys whose values differ between its results (empty when one)."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for test_id, metric, workload in items:
        grouped.setdefault((test_id, metric), []).append(workload)
    out: dict[tuple[str, str], set[str]] = {}
    for key, workloads in grouped.items():
        names = {k for w in workloads for k in w}
        out[key] = {k for k in names if len({repr(w.get(k)) for w in workloads}) > 1}
    return out


def result_rows(items: list[MetricResult]) -> list[str]:
    """The fixed-width table (header first) of the terminal summary; widths fit the longest metric name."""
    keys = varying_keys([(i.test_id, i.metric, i.workload) for i in items])
    tests = [display_test(i.test_id, i.workload, keys=keys[(i.test_id, i.metric)]) for i in items]
    test_w = max([4, *map(len, tests)])
    metric_w = max([13, *(len(f"{i.metric} ({i.unit})") for i in items)])
    header = (
        f"{'test':{test_w}s} {'metric (unit)':{metric_w}s} {'measured':>10s} {'limit':>11s} "
        f"{'baseline':>10s} {'change':>14s} {'n':>6s}  verdict"
    )
    rows = [header]
    for item, test in zip(items, tests, strict=True):
        limit = f"{item.comparison} {_fmt(item.limit)}" if item.limit is not None else "-"
        verdict: str = item.verdict
        if (item.extra.get("regression") or {}).get("refused"):
            verdict = "REFUSED"
        rows.append(
            f"{test:{test_w}s} {item.metric + ' (' + item.unit + ')':{metric_w}s} {_fmt(item.value):>10s} "
            f"{limit:>11s} {_fmt(item.baseline):>10s} "
            f"{change_text(item.value, item.baseline, item.change_pct):>14s} {item.samples:>6d}  {verdict}"
        )
    return rows


class TerminalWriter(Protocol):
    """The part of pytest's terminal reporter the summary writes through."""

    def write_sep(self, sep: str, title: str | None = None, **markup: bool) -> None: ...
    def write_line(self, line: str | bytes, **markup: bool) -> None: ...


def write_terminal_summary(
    out: TerminalWriter,
    *,
    engine: EngineInfo | None,
    hw: str,
    results: RunResults,
    history: HistorySession | None,
) -> None:
    """Print the engine identity, the results table and where history and reports went."""
    if engine is None and not results.items and not (history and history.warnings):
        return
    out.write_sep("=", "dsbench")
    if engine is not None:
        out.write_line(
            f"engine {engine.name} {engine.version} ({engine.mode} {engine.base_url}) model={engine.model} "
            f"max_model_len={engine.max_model_len} hw={hw} eplb={engine.eplb_mode}"
        )
        if engine.log_paths:
            out.write_line("engine log: " + ", ".join(str(p) for p in engine.log_paths))
    others = [i for i in results.items if not module_tables.is_module_metric(i.metric)]
    if others:
        for row in result_rows(others):
            out.write_line(row)
    for line in module_tables.render(module_tables.from_metric_results(results.items)):
        out.write_line(line, **({"red": True} if module_tables.is_flag_line(line) else {}))
    if history is None:
        return
    if history.baseline is not None:
        limits = {**history.limits.profile, **history.limits.cli}
        limit_text = ", ".join(f"{k}:{v:g}%" for k, v in sorted(limits.items())) or "none"
        out.write_line(
            f"baseline: run {history.baseline.label} ({history.baseline.datetime}); regression "
            f"limits {limit_text}; confidence {history.confidence * 100:g}%; run-to-run noise from "
            f"{len(history.history_runs)} stored run(s)"
        )
    if history.saved_path is not None:
        out.write_line(f"history: stored as {history.saved_path}")
    if history.report_paths:
        out.write_line("reports: " + ", ".join(str(p) for p in history.report_paths))
    for warning in history.warnings:
        out.write_line(f"dsbench warning: {warning}", yellow=True)


# -- JSON ----------------------------------------------------------------------------------------------------
def _sample_summary(samples: list[float]) -> dict[str, float] | None:
    if not samples:
        return None
    import numpy as np

    arr = np.asarray(samples, dtype=float)
    return {
        "n": int(arr.size),
        "min": float(arr.min()),
        "median": float(np.median(arr)),
        "mean": float(arr.mean()),
        "p90": float(np.percentile(arr, 90)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
    }


def json_report(doc: dict[str, Any], history: HistorySession) -> dict[str, Any]:
    """The JSON report: provenance, every result with its judgement, and a summary."""
    results = []
    for bench in doc.get("benchmarks", []):
        info = dict(bench["extra_info"]["dsbench"])
        scale = float(info.get("scale") or 1.0)
        data = bench["stats"].get("data") or []
        info["sample_stats"] = _sample_summary([v / scale for v in data]) if info.get("has_samples") else None
        results.append(info)
    block = doc.get("dsbench", {})
    invalid = list(block.get("invalid_runs") or [])
    return {
        "schema": 1,
        "provenance": block.get("provenance"),
        "exitstatus": block.get("exitstatus"),
        "interrupted": block.get("interrupted"),
        "stored_as": str(history.saved_path) if history.saved_path else None,
        "baseline_run": history.baseline.label if history.baseline else None,
        "confidence": history.confidence,
        "summary": {
            "results": len(results),
            "failed": sum(1 for r in results if r.get("verdict") == "FAIL"),
            "regressed": sum(1 for r in results if r.get("regressed")),
            "refused": sum(1 for r in results if (r.get("regression") or {}).get("refused")),
            "invalid": len(invalid),
        },
        "results": results,
        "invalid_runs": invalid,
        "warnings": list(history.warnings),
    }


# -- HTML ----------------------------------------------------------------------------------------------------
_CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}th{background:#f3f3f3}
.PASS{color:#0a6b0a;font-weight:600}.FAIL,.REGRESSED,.REFUSED,.ABOVE{color:#b00020;font-weight:700}
.num{text-align:right;font-variant-numeric:tabular-nums}.note{color:#666;font-size:12px}
figure{display:inline-block;margin:8px;vertical-align:top}"""


def _e(value: object) -> str:
    return html.escape("-" if value is None else str(value))


def _provenance_rows(prov: dict[str, Any], history: HistorySession) -> list[tuple[str, str]]:
    hw = prov.get("hw_profile") or {}
    git = prov.get("git") or {}
    return [
        ("engine", f"{prov.get('engine')} {prov.get('engine_version')} ({prov.get('mode')})"),
        ("model", f"{prov.get('model')} ({prov.get('model_path')}), max_model_len {prov.get('max_model_len')}"),
        (
            "hardware",
            f"{prov.get('hw')}: {hw.get('devices')} x {hw.get('accelerator')}, deployment "
            f"{hw.get('deployment')}",
        ),
        ("launch command", " ".join(prov.get("launch_command") or []) or "-"),
        (
            "suite",
            f"pytest-dsbench {prov.get('suite_version')}, git {git.get('id')}"
            f"{' (uncommitted changes)' if git.get('dirty') else ''}",
        ),
        ("time / host", f"{prov.get('time')} on {prov.get('host')}"),
        ("baseline", history.baseline.label if history.baseline else "none"),
        ("stored as", str(history.saved_path) if history.saved_path else "not stored"),
    ]


def _interval_text(interval: dict[str, Any] | None) -> str:
    """`` [low, high]``: a result's 95% interval under its value (nothing when it has none)."""
    if not interval or interval.get("low") is None:
        return ""
    high = "-" if interval.get("high") is None else _fmt(interval["high"])
    return f"<br><small title='{_e(str(interval.get('method', '')))}'>[{_fmt(interval['low'])}, {high}]</small>"


def _results_table(results: list[dict[str, Any]]) -> str:
    head = (
        "<tr><th>test</th><th>metric (unit)</th><th>measured</th><th>limit</th><th>baseline</th>"
        "<th>change</th><th>n</th><th>verdict</th><th>regression check</th></tr>"
    )
    rows = [head]
    for r in results:
        regression = r.get("regression") or {}
        verdict = "REFUSED" if regression.get("refused") else r.get("verdict", "-")
        limit = f"{r['comparison']} {_fmt(r['limit'])}" if r.get("limit") is not None else "-"
        note = regression.get("refused") or regression.get("detail") or regression.get("note") or ""
        rows.append(
            f"<tr><td>{_e(r['test_id'])}</td><td>{_e(r['metric'])} ({_e(r['unit'])})</td>"
            f"<td class=num>{_fmt(r['value'])}{_interval_text(r.get('interval'))}</td><td class=num>{_e(limit)}</td>"
            f"<td class=num>{_fmt(r.get('baseline'))}</td>"
            f"<td class=num>{_e(change_text(r['value'], r.get('baseline'), r.get('change_pct')))}</td>"
            f"<td class=num>{r.get('sample_count', 0)}</td><td class={_e(verdict)}>{_e(verdict)}</td>"
            f"<td class=note>{_e(note)}</td></tr>"
        )
    return "<table>" + "\n".join(rows) + "</table>"


def _num_cell(text: str, *, above: bool = False) -> str:
    """A right-aligned cell; ``above``: a figure above its measured peak, in the FAIL colour."""
    return f'<td class="num ABOVE">{_e(text)}</td>' if above else f"<td class=num>{_e(text)}</td>"


def _modules_html(tables: module_tables.ModuleTables) -> str:
    """Seed 002's tables as HTML (empty when the run has no module results)."""
    if tables.empty:
        return ""
    parts = [f"<h2>Modules (seed 002)</h2><p>{_e(module_tables.heading(tables))}</p>"]
    sections = module_tables.sections(tables)
    summary = module_tables.above_peak_summary(sections)
    if summary:
        parts.append(f"<p class=ABOVE>{_e(summary)}</p>")
    for section in sections:
        head = "".join(f"<th>{_e(h)}</th>" for h in section.header)
        body = "".join(
            "<tr>" + "".join(_num_cell(c, above=(i, j) in section.marked) for j, c in enumerate(row)) + "</tr>"
            for i, row in enumerate(section.rows)
        )
        notes = "".join(f"<p class=ABOVE>{_e(n)}</p>" for n in section.notes)
        parts.append(f"<h3>{_e(section.title)}</h3><table><tr>{head}</tr>{body}</table>{notes}")
    return "\n".join(parts)


def _module_figures(tables: module_tables.ModuleTables) -> list[tuple[str, str]]:
    from pytest_dsbench.history import plots

    return [
        (f"{module}: time vs tokens", plots.to_svg(plots.module_time_figure(module, series)))
        for module, series in module_tables.time_series(tables).items()
    ]


def _server_metrics_section(results: list[dict[str, Any]]) -> list[str]:
    """One table per load run whose results carry the engine's /metrics report (summary, note, series)."""
    from pytest_dsbench.history.document import workload_label

    seen: set[str] = set()
    parts: list[str] = []
    for r in results:
        report = r.get("server_metrics")
        if not isinstance(report, dict):
            continue
        key = f"{r['test_id']} {workload_label(r.get('workload') or {}, 200)}"
        if key in seen:
            continue
        seen.add(key)
        summary = report.get("summary") or {}
        increases = report.get("increases") or {}
        rows = "".join(f"<tr><th>{_e(k)}</th><td class=num>{_fmt(v)}</td></tr>" for k, v in summary.items())
        rows += "".join(f"<tr><th>{_e(k)} (increase)</th><td class=num>{_fmt(v)}</td></tr>"
                        for k, v in increases.items())
        series = report.get("series") or []
        columns = sorted({c for point in series for c in point if c != "t_s"})
        table = "<tr><th>t (s)</th>" + "".join(f"<th>{_e(c)}</th>" for c in columns) + "</tr>" + "".join(
            f"<tr><td class=num>{_fmt(p.get('t_s'))}</td>"
            + "".join(f"<td class=num>{_fmt(p.get(c))}</td>" for c in columns) + "</tr>" for p in series)
        parts.append(
            f"<h3>{_e(key)}</h3><p class=note>cache control: {_e(report.get('cache_control') or '-')}; "
            f"{len(series)} scrapes every {_e(report.get('interval_s'))} s; failed scrapes "
            f"{_e(report.get('failed_scrapes', 0))}{'; ' + _e(report['note']) if report.get('note') else ''}</p>"
            f"<table>{rows}</table><details><summary>series</summary><table>{table}</table></details>"
        )
    return ["<h2>Server metrics (engine /metrics during each load run)</h2>", *parts] if parts else []


def _figures(
    current: StoredRun, baseline: StoredRun | None, history_runs: list[StoredRun], gated: list[str]
) -> list[tuple[str, str]]:
    """(caption, svg) of every plot the data supports."""
    from pytest_dsbench.history import plots

    figures: list[tuple[str, str]] = []
    pair = [current] + ([baseline] if baseline is not None else [])
    for family in ("tpot", "ttft"):
        series = plots.cdf_series(pair, family)
        if series:
            figures.append((f"{family.upper()} CDF", plots.to_svg(plots.cdf_figure(series, family))))
    points = plots.concurrency_points(pair)
    if any(len(p) > 1 for p in points.values()):
        figures.append(("throughput vs concurrency", plots.to_svg(plots.throughput_figure(points))))
    pareto = plots.pareto_points(pair)
    if pareto:
        figures.append(("per-GPU vs per-user", plots.to_svg(plots.pareto_figure(pareto))))
    for metric in gated[:6]:
        series_h = plots.history_points(history_runs, metric)
        if any(len(p) > 1 for p in series_h.values()):
            figures.append((f"{metric} history", plots.to_svg(plots.history_figure(series_h, metric))))
    return figures


def _invalid_section(invalid: list[dict[str, str]]) -> list[str]:
    """The tests that judged nothing because their run was INVALID, each with the reason and the fix."""
    if not invalid:
        return []
    rows = "".join(f"<tr><td>{_e(r['test_id'])}</td><td>{_e(r['message'])}</td></tr>" for r in invalid)
    return ["<h2>INVALID runs (nothing judged)</h2><table><tr><th>test</th><th>why</th></tr>", rows, "</table>"]


def render_html(doc: dict[str, Any], history: HistorySession, history_runs: list[StoredRun]) -> str:
    """The self-contained HTML report of one run."""
    from pytest_dsbench.errors import MissingExtra
    from pytest_dsbench.history.document import parse

    report = json_report(doc, history)
    prov = report["provenance"] or {}
    current = parse(history.saved_path or Path("current"), doc, display="this run")
    modules = module_tables.collect(report["results"])
    results = [r for r in report["results"] if not module_tables.is_module_metric(r["metric"])]
    gated = sorted(
        {
            r["metric"]
            for r in results
            if history.limits.limit_for(r["metric"]) is not None or r.get("limit") is not None
        }
    )
    try:
        figures = _figures(current, history.baseline, history_runs, gated) + _module_figures(modules)
        plot_note = ""
    except MissingExtra as exc:
        figures, plot_note = [], str(exc)
    except Exception as exc:  # a plot must never turn a verdict into an internal error
        figures, plot_note = [], f"plots failed ({type(exc).__name__}: {exc}); the results above are complete"
    summary = report["summary"]
    parts = [
        "<!doctype html><html><head><meta charset=utf-8><title>pytest-dsbench report</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>pytest-dsbench: {_e(prov.get('engine'))} on {_e(prov.get('hw'))}</h1>",
        f"<p>{summary['results']} results, {summary['failed']} below their limit, {summary['regressed']} "
        f"regressed, {summary['refused']} comparisons refused, {summary['invalid']} tests INVALID; "
        f"exit status {_e(report['exitstatus'])}"
        f"{' (interrupted)' if report['interrupted'] else ''}. Regression checks use "
        f"{history.confidence * 100:g}% confidence.</p>",
        "<h2>Provenance</h2><table>",
        *[f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in _provenance_rows(prov, history)],
        "</table><h2>Results</h2>",
        _results_table(results),
        *_invalid_section(report["invalid_runs"]),
        _modules_html(modules),
        *_server_metrics_section(report["results"]),
        "<h2>Plots</h2>",
    ]
    if plot_note:
        parts.append(f"<p class=note>{_e(plot_note)}</p>")
    elif not figures:
        parts.append("<p class=note>no plottable data (no per-request samples or concurrency sweep)</p>")
    parts += [f"<figure>{svg}<figcaption>{_e(caption)}</figcaption></figure>" for caption, svg in figures]
    if report["warnings"]:
        parts.append(
            "<h2>Warnings</h2><ul>" + "".join(f"<li>{_e(w)}</li>" for w in report["warnings"]) + "</ul>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_reports(artifacts_dir: Path, doc: dict[str, Any], history: HistorySession) -> list[Path]:
    """Write ``dsbench-report.json`` and ``dsbench-report.html`` atomically; returns their paths."""
    from pytest_dsbench.history import storage

    json_path = artifacts_dir / JSON_REPORT
    _atomic.write_text(json_path, json.dumps(json_report(doc, history), indent=2, default=str) + "\n")
    runs = list(storage.iter_runs(history.folder))[-HISTORY_RUNS_IN_REPORT:] if history.save_enabled else []
    if history.saved_path is None:
        from pytest_dsbench.history.document import parse

        runs.append(parse(Path("current"), doc, display="this run"))
    html_path = artifacts_dir / HTML_REPORT
    _atomic.write_text(html_path, render_html(doc, history, runs))
    return [json_path, html_path]
