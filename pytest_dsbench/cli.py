"""``pytest-dsbench`` (also ``python -m pytest_dsbench``): browse, compare, export and plot the result
history.

Commands (the history folder is ``--storage``, default ``$DSBENCH_STORAGE`` or ``.benchmarks``)::

    pytest-dsbench list [--engine E --hw H]
    pytest-dsbench compare BASELINE NEW [--regress METRIC:PCT ...] [--confidence 0.99] [--force] [--fail]
    pytest-dsbench export [RUN ...] [--format csv|json] [--samples] [-o FILE]
    pytest-dsbench plot cdf RUN [RUN ...] [--metric tpot|ttft|itl|e2e] [-o FILE]
    pytest-dsbench plot throughput RUN [RUN ...] [--metric output_tok_s] [-o FILE]
    pytest-dsbench plot pareto RUN [RUN ...] [-o FILE]
    pytest-dsbench plot history METRIC [--test SUBSTRING] [--last N] [-o FILE]

A RUN is ``latest``, ``latest~1``, a number (``3``), a run id prefix, ``<engine>-<hw>/RUN`` or a path to a run
file. ``--engine``/``--hw`` pick the ``<engine>-<hw>`` folder; when the storage holds one folder it is used.
``compare --fail`` exits 1 when a result regressed (same judgement as the in-test gate), so CI can gate on two
stored runs. Errors are one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_dsbench import _atomic
from pytest_dsbench.errors import DsbenchUsageError, MissingExtra
from pytest_dsbench.history import storage
from pytest_dsbench.history.compare import DEFAULT_CONFIDENCE, RegressLimits, compare_runs, validate_limits
from pytest_dsbench.history.document import StoredRun

EXPORT_COLUMNS = (
    "run",
    "datetime",
    "engine",
    "engine_version",
    "model",
    "hw",
    "git",
    "test_id",
    "metric",
    "unit",
    "value",
    "limit",
    "comparison",
    "verdict",
    "baseline",
    "change_pct",
    "samples",
    "workload",
)


class CliError(Exception):
    """A one-line error for the user."""


# -- run selection -------------------------------------------------------------------------------------------
def _folder(args: argparse.Namespace, refs: Sequence[str] = ()) -> Path:
    root = Path(args.storage)
    if args.engine and args.hw:
        return storage.run_folder(root, args.engine, args.hw)
    if args.engine or args.hw:
        raise CliError("give both --engine and --hw (they name the <engine>-<hw> folder), or neither")
    found = storage.folders(root)
    if len(found) == 1:
        return found[0]
    if refs and all("/" in r or r.endswith(".json") for r in refs):
        return root
    if not found:
        raise CliError(
            f"no stored runs under {root}; run pytest with --dsbench-storage {root} first, or pass "
            "--storage DIR"
        )
    names = ", ".join(p.name for p in found)
    raise CliError(
        f"{root} holds several folders ({names}): pass --engine and --hw, or write RUN as FOLDER/RUN"
    )


def _resolve(args: argparse.Namespace, folder: Path, ref: str) -> StoredRun:
    return storage.resolve(Path(args.storage), folder, ref)


def _summary(run: StoredRun) -> str:
    prov = run.provenance
    git = (prov.get("git") or {}).get("id") or "?"
    return (
        f"{run.label}  {run.datetime}  {prov.get('engine')} {prov.get('engine_version')}  "
        f"model={prov.get('model')}  hw={prov.get('hw')}  git={str(git)[:12]}"
    )


# -- commands ------------------------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    root = Path(args.storage)
    if bool(args.engine) != bool(args.hw):
        raise CliError("give both --engine and --hw (they name the <engine>-<hw> folder), or neither")
    folders = (
        [storage.run_folder(root, args.engine, args.hw)] if args.engine and args.hw else storage.folders(root)
    )
    if not folders:
        print(f"no stored runs under {root}")
        return 0
    warnings: list[str] = []
    print(
        f"{'run':44s} {'time':25s} {'engine':22s} {'model':16s} {'results':>7s} {'failed':>6s} "
        f"{'regressed':>9s}"
    )
    for folder in folders:
        for run in storage.iter_runs(folder, warnings):
            prov = run.provenance
            failed = sum(1 for e in run.entries if e.verdict == "FAIL")
            regressed = sum(1 for e in run.entries if e.verdict == "REGRESSED")
            label = run.label + (" (interrupted)" if run.interrupted else "")
            engine = f"{prov.get('engine')} {prov.get('engine_version')}"
            print(
                f"{label:44s} {run.datetime:25s} {engine:22s} {prov.get('model')!s:16s} "
                f"{len(run.entries):>7d} {failed:>6d} {regressed:>9d}"
            )
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _limits(args: argparse.Namespace, new: StoredRun) -> RegressLimits:
    from pytest_dsbench.options import _parse_regress

    cli = _parse_regress(list(args.regress or []))
    validate_limits(cli, "--regress")
    stored = {str(k): float(v) for k, v in (new.provenance.get("regress_pct") or {}).items()}
    return RegressLimits(cli=cli, profile=stored, profile_source=f"limits stored with {new.label}")


def cmd_compare(args: argparse.Namespace) -> int:
    from pytest_dsbench.report import change_text, display_test, varying_keys

    folder = _folder(args, [args.baseline, args.new])
    baseline, new = _resolve(args, folder, args.baseline), _resolve(args, folder, args.new)
    confidence = args.confidence or float(new.provenance.get("confidence") or DEFAULT_CONFIDENCE)
    if not 0.5 < confidence < 1:
        raise CliError(f"--confidence {confidence} must be between 0.5 and 1 (e.g. 0.99)")
    comparisons, refusals = compare_runs(
        baseline,
        new,
        _limits(args, new),
        confidence=confidence,
        force=args.force,
        history=storage.comparable_history(baseline),
    )
    print(f"baseline: {_summary(baseline)}")
    print(f"new:      {_summary(new)}")
    print(
        f"{'test':48s} {'metric (unit)':28s} {'baseline':>10s} {'new':>10s} {'change':>15s} {'limit':>7s} "
        f"{'p':>8s}  verdict"
    )
    keys = varying_keys([(c.test_id, c.metric, c.workload) for c in comparisons])
    for c in comparisons:
        test = display_test(c.test_id, c.workload, keys=keys[(c.test_id, c.metric)])
        verdict = "REGRESSED" if c.regressed else (c.note or "ok")
        limit = f"{c.limit_pct:g}%" if c.limit_pct is not None else "-"
        p = f"{c.p_value:.2g}" if c.p_value is not None else "-"
        print(
            f"{test:48s} {c.metric + ' (' + c.unit + ')':28s} {c.baseline_value or 0:>10.4g} "
            f"{c.value:>10.4g} "
            f"{change_text(c.value, c.baseline_value, c.change_pct):>15s} {limit:>7s} {p:>8s}  {verdict}"
        )
    for refusal in refusals:
        print(f"refused: {refusal} (pass --force to compare anyway)")
    regressed = [c for c in comparisons if c.regressed]
    print(
        f"{len(comparisons)} compared, {len(regressed)} regressed, {len(refusals)} refused "
        f"({confidence * 100:g}% confidence)"
    )
    for c in regressed:
        print(f"REGRESSED {c.test_id}: {c.message()}")
    return 1 if args.fail and (regressed or refusals) else 0


def _export_rows(runs: list[StoredRun], with_samples: bool) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        prov = run.provenance
        for e in run.entries:
            row: dict[str, Any] = {
                "run": run.label,
                "datetime": run.datetime,
                "engine": prov.get("engine"),
                "engine_version": prov.get("engine_version"),
                "model": prov.get("model"),
                "hw": prov.get("hw"),
                "git": (prov.get("git") or {}).get("id"),
                "test_id": e.test_id,
                "metric": e.metric,
                "unit": e.unit,
                "value": e.value,
                "limit": e.limit,
                "comparison": e.comparison,
                "verdict": e.verdict,
                "baseline": e.baseline,
                "change_pct": e.change_pct,
                "samples": e.sample_count,
                "workload": e.workload,
            }
            if with_samples:
                row["sample_values"] = e.samples
            rows.append(row)
    return rows


def cmd_export(args: argparse.Namespace) -> int:
    folder = _folder(args, args.runs)
    runs = [_resolve(args, folder, ref) for ref in args.runs] if args.runs else list(storage.iter_runs(folder))
    rows = _export_rows(runs, args.samples)
    if args.format == "json":
        text = (
            json.dumps(
                {"runs": [{"run": r.label, "provenance": r.provenance} for r in runs], "results": rows},
                indent=2,
                default=str,
            )
            + "\n"
        )
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=EXPORT_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "workload": json.dumps(row["workload"], sort_keys=True)})
        text = buffer.getvalue()
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        _atomic.write_text(Path(args.output), text)
        print(f"wrote {len(rows)} results of {len(runs)} run(s) to {args.output}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from pytest_dsbench.history import plots

    output = Path(args.output or f"dsbench-{args.kind}.png")
    if args.kind == "history":
        folder = _folder(args)
        runs = list(storage.iter_runs(folder))[-args.last :]
        series = plots.history_points(runs, args.metric, args.test)
        if not series:
            raise CliError(f"no stored result of {args.metric!r} in {folder}")
        figure = plots.history_figure(series, args.metric)
    else:
        folder = _folder(args, args.runs)
        runs = [_resolve(args, folder, ref) for ref in args.runs]
        if args.kind == "cdf":
            family = (args.metric or "tpot").split("_", 1)[0]
            cdf = plots.cdf_series(runs, family)
            if not cdf:
                raise CliError(f"no per-request {family} samples in {', '.join(r.label for r in runs)}")
            figure = plots.cdf_figure(cdf, family)
        elif args.kind == "throughput":
            metric = args.metric or "output_tok_s"
            points = plots.concurrency_points(runs, metric)
            if not points:
                raise CliError(
                    f"no {metric} results with a concurrency in their workload "
                    f"(keys: {', '.join(plots.CONCURRENCY_KEYS)})"
                )
            figure = plots.throughput_figure(points, metric)
        else:
            pareto = plots.pareto_points(runs)
            if not pareto:
                raise CliError("no results with both throughput and TPOT (or per-user/per-device throughput)")
            figure = plots.pareto_figure(pareto)
    plots.save(figure, output)
    print(f"wrote {output}")
    return 0


# -- parser --------------------------------------------------------------------------------------------------
def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pytest-dsbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--storage",
        default=os.environ.get("DSBENCH_STORAGE", ".benchmarks"),
        metavar="DIR",
        help="history folder (as --dsbench-storage). Default: %(default)s",
    )
    parser.add_argument("--engine", help="engine of the <engine>-<hw> folder")
    parser.add_argument("--hw", help="hardware profile of the <engine>-<hw> folder")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("list", help="list stored runs")
    cmp = commands.add_parser("compare", help="compare two runs side by side (direction- and noise-aware)")
    cmp.add_argument("baseline", metavar="BASELINE")
    cmp.add_argument("new", metavar="NEW")
    cmp.add_argument(
        "--regress",
        action="append",
        metavar="METRIC:PCT",
        help="regression limit (repeatable; patterns like tpot_ms_*:5). Default: the limits stored "
        "with NEW (its hw profile and --dsbench-regress)",
    )
    cmp.add_argument(
        "--confidence",
        type=float,
        default=None,
        help="confidence of the statistical test (default: NEW's, normally 0.99)",
    )
    cmp.add_argument("--force", action="store_true", help="compare across engine, hw, model or workload")
    cmp.add_argument("--fail", action="store_true", help="exit 1 when a result regressed or was refused")
    exp = commands.add_parser("export", help="export results as CSV or JSON")
    exp.add_argument(
        "runs", nargs="*", metavar="RUN", help="runs to export (default: every run of the folder)"
    )
    exp.add_argument("--format", choices=("csv", "json"), default="csv")
    exp.add_argument("--samples", action="store_true", help="include raw per-request samples (JSON only)")
    exp.add_argument("-o", "--output", metavar="FILE", help="output file (default: stdout)")
    plot = commands.add_parser("plot", help="plots (needs pytest-dsbench[report])")
    kinds = plot.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind, text in (
        ("cdf", "latency CDF of runs"),
        ("throughput", "throughput vs concurrency"),
        ("pareto", "per-GPU vs per-user throughput"),
    ):
        sub = kinds.add_parser(kind, help=text)
        sub.add_argument("runs", nargs="+", metavar="RUN")
        sub.add_argument("--metric", help="tpot/ttft/itl/e2e for cdf; a throughput metric for throughput")
        sub.add_argument("-o", "--output", metavar="FILE", help="image file (.png, .svg, .pdf)")
    hist = kinds.add_parser("history", help="a metric across stored runs")
    hist.add_argument("metric", metavar="METRIC")
    hist.add_argument("--test", help="only tests whose id contains this")
    hist.add_argument("--last", type=int, default=50, help="newest N runs (default: %(default)s)")
    hist.add_argument("-o", "--output", metavar="FILE", help="image file (.png, .svg, .pdf)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 regression with --fail, 2 usage error)."""
    parser = make_parser()
    args = parser.parse_args(argv)
    handlers = {"list": cmd_list, "compare": cmd_compare, "export": cmd_export, "plot": cmd_plot}
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return handlers[args.command](args)
    except (CliError, DsbenchUsageError, MissingExtra) as exc:
        print(f"pytest-dsbench: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
