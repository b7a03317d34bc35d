"""Plots of stored runs: latency CDFs, throughput vs concurrency, per-GPU vs per-user Pareto, metric history.

Used by the HTML report and ``pytest-dsbench plot``. matplotlib is optional (extra ``report``) and imported
only here, inside functions; without it :class:`~pytest_dsbench.errors.MissingExtra` names the extra. Every
title says which way is better.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_dsbench import metrics
from pytest_dsbench.history.document import StoredRun, workload_label

CONCURRENCY_KEYS = ("max_concurrency", "concurrency", "batch_size", "batch")
CDF_POINTS = 400
LATENCY_FAMILIES = ("tpot", "ttft", "itl", "e2e")


def pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend, or MissingExtra('report')."""
    from pytest_dsbench.errors import require

    matplotlib: Any = require("matplotlib", "report", "plotting (HTML report plots, pytest-dsbench plot)")
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _sense(metric: str) -> str:
    definition = metrics.METRICS.get(metric)
    if definition is None:
        return ""
    return " (lower is better)" if definition.direction == "lower_is_better" else " (higher is better)"


def _short_test(test_id: str) -> str:
    return test_id.rsplit("::", 1)[-1]


def series_label(run: StoredRun, test_id: str, workload: dict[str, Any], *, with_test: bool = True) -> str:
    parts = [run.short_name]
    if with_test:
        parts.append(_short_test(test_id))
    label = workload_label(workload, 40)
    if label:
        parts.append(f"[{label}]")
    return " ".join(parts)


# -- data from runs ------------------------------------------------------------------------------------------
def cdf_series(runs: Sequence[StoredRun], family: str) -> dict[tuple[str, str], list[float]]:
    """Per-request samples of one latency family (``tpot``...), keyed by (run name, test and workload)."""
    out: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        seen: set[tuple[str, str]] = set()
        for entry in run.entries:
            if not entry.metric.startswith(f"{family}_") or not entry.samples:
                continue
            key = (entry.test_id, repr(sorted(entry.workload.items())))
            if key in seen:
                continue
            seen.add(key)
            rest = _short_test(entry.test_id) + (
                f" [{workload_label(entry.workload, 40)}]" if entry.workload else ""
            )
            out[(run.short_name, rest)] = entry.samples
    return out


def _concurrency(workload: dict[str, Any]) -> float | None:
    for key in CONCURRENCY_KEYS:
        value = workload.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def concurrency_points(
    runs: Sequence[StoredRun], metric: str = "output_tok_s"
) -> dict[str, list[tuple[float, float]]]:
    """``(concurrency, value)`` points of ``metric`` per run and test, from the workloads' concurrency."""
    out: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        for entry in run.entries:
            x = _concurrency(entry.workload)
            if entry.metric != metric or x is None:
                continue
            rest = {k: v for k, v in entry.workload.items() if k not in CONCURRENCY_KEYS}
            out.setdefault(series_label(run, entry.test_id, rest), []).append((x, entry.value))
    return {k: sorted(v) for k, v in out.items()}


def pareto_points(runs: Sequence[StoredRun]) -> dict[str, list[tuple[float, float]]]:
    """``(tok/s per user, tok/s per GPU)`` points per run, for every test and workload that recorded both.

    Uses ``output_tok_s_per_user`` / ``output_tok_s_per_device`` when recorded, else derives them (1000 / mean
    TPOT in ms; output tok/s / the profile's device count); seed 003's server-log decode figures
    (``decode_tok_s_per_user`` / ``decode_tok_s_per_device``) form a series of their own.
    """
    out: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        devices = float((run.provenance.get("hw_profile") or {}).get("devices") or 1)
        grouped: dict[tuple[str, str], dict[str, float]] = {}
        for entry in run.entries:
            key = (entry.test_id, repr(sorted(entry.workload.items())))
            grouped.setdefault(key, {})[entry.metric] = entry.value
        name = run.short_name
        for values in grouped.values():
            tpot = values.get("tpot_ms_mean") or values.get("tpot_ms_median")
            per_user = values.get("output_tok_s_per_user") or (1000.0 / tpot if tpot else None)
            per_gpu = values.get("output_tok_s_per_device") or (
                values["output_tok_s"] / devices if values.get("output_tok_s") else None
            )
            if per_user and per_gpu:
                out.setdefault(f"{name} client", []).append((per_user, per_gpu))
            if values.get("decode_tok_s_per_user") and values.get("decode_tok_s_per_device"):
                out.setdefault(f"{name} server log", []).append(
                    (values["decode_tok_s_per_user"], values["decode_tok_s_per_device"])
                )
    return out


def history_points(
    runs: Sequence[StoredRun], metric: str, test: str | None = None
) -> dict[str, list[tuple[int, str, float]]]:
    """``(position, run number, value)`` of ``metric`` across ``runs`` (in their order), one series per test
    and workload; the position keeps runs in order on the x axis even when a series skips some."""
    out: dict[str, list[tuple[int, str, float]]] = {}
    for position, run in enumerate(runs):
        for entry in run.entries:
            if entry.metric != metric or (test and test not in entry.test_id):
                continue
            label = _short_test(entry.test_id) + (
                f" [{workload_label(entry.workload, 40)}]" if entry.workload else ""
            )
            out.setdefault(label, []).append((position, run.short_name, entry.value))
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not beaten on both axes (higher is better on both), sorted by x."""
    front = [p for p in points if not any(q[0] >= p[0] and q[1] >= p[1] and q != p for q in points)]
    return sorted(set(front))


# -- figures -------------------------------------------------------------------------------------------------
def _finish(fig: Any, ax: Any) -> None:
    """Grid, and the legend outside the axes (curves stay visible however many series there are)."""
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()


def _downsample(sorted_values: Sequence[float]) -> tuple[list[float], list[float]]:
    n = len(sorted_values)
    step = max(1, n // CDF_POINTS)
    idx = list(range(0, n, step))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    return [sorted_values[i] for i in idx], [(i + 1) / n for i in idx]


def cdf_figure(series: dict[tuple[str, str], list[float]], family: str, unit: str = "ms") -> Any:
    """Empirical CDF of each series' samples: one colour per test and workload, one line style per run."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    runs = list(dict.fromkeys(run for run, _ in series))
    groups = list(dict.fromkeys(rest for _, rest in series))
    styles = ("-", "--", ":", "-.")
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for (run, rest), samples in series.items():
        xs, ys = _downsample(sorted(samples))
        ax.step(
            xs,
            ys,
            where="post",
            label=f"{run} {rest} (n={len(samples)})",
            linestyle=styles[runs.index(run) % len(styles)],
            color=colors[groups.index(rest) % len(colors)],
        )
    ax.set_xlabel(f"{family.upper()} ({unit})")
    ax.set_ylabel("fraction of requests")
    ax.set_title(f"{family.upper()} CDF (lower is better: curves further left)")
    _finish(fig, ax)
    return fig


def line_figure(series: dict[str, list[tuple[float, float]]], *, xlabel: str, ylabel: str, title: str) -> Any:
    """One line per series (throughput vs concurrency)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    for label, points in series.items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    xs = [p[0] for points in series.values() for p in points if p[0] > 0]
    if xs and max(xs) / min(xs) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _finish(fig, ax)
    return fig


def throughput_figure(series: dict[str, list[tuple[float, float]]], metric: str = "output_tok_s") -> Any:
    unit = metrics.METRICS[metric].unit if metric in metrics.METRICS else ""
    return line_figure(
        series,
        xlabel="concurrency",
        ylabel=f"{metric} ({unit})",
        title=f"{metric} vs concurrency{_sense(metric)}",
    )


def pareto_figure(series: dict[str, list[tuple[float, float]]]) -> Any:
    """Per-GPU vs per-user throughput, with each series' Pareto front."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    for label, points in series.items():
        line = ax.scatter([p[0] for p in points], [p[1] for p in points], label=label, s=18)
        front = pareto_front(points)
        ax.plot([p[0] for p in front], [p[1] for p in front], color=line.get_facecolor()[0], alpha=0.7)
    ax.set_xlabel("output tok/s per user")
    ax.set_ylabel("output tok/s per GPU")
    ax.set_title("per-GPU vs per-user throughput (higher and further right is better)")
    _finish(fig, ax)
    return fig


def history_figure(series: dict[str, list[tuple[int, str, float]]], metric: str) -> Any:
    """A metric across stored runs (x: run number, in storage order)."""
    plt = pyplot()
    unit = metrics.METRICS[metric].unit if metric in metrics.METRICS else ""
    fig, ax = plt.subplots(figsize=(8, 4))
    ticks: dict[int, str] = {}
    for label, points in series.items():
        ax.plot([p[0] for p in points], [p[2] for p in points], marker="o", label=label)
        ticks.update({p[0]: p[1] for p in points})
    ax.set_xticks(sorted(ticks), [ticks[k] for k in sorted(ticks)], rotation=45)
    ax.set_xlabel("stored run")
    ax.set_ylabel(f"{metric} ({unit})")
    ax.set_title(f"{metric} history{_sense(metric)}")
    _finish(fig, ax)
    return fig


def module_time_figure(module: str, series: dict[str, list[tuple[float, float]]]) -> Any:
    """Seed 002's module plot: median time of one call against tokens, log-log, one line per variant and dtype."""
    fig = line_figure(series, xlabel="tokens", ylabel="time per call (ms)",
                      title=f"{module}: time vs tokens (lower is better)")
    fig.axes[0].set_yscale("log")
    return fig


def to_svg(fig: Any) -> str:
    """The figure as an inline SVG string (for self-contained HTML); closes the figure."""
    plt = pyplot()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.find("<svg") :]


def save(fig: Any, path: Path) -> Path:
    """Write the figure (format from the suffix: .png, .svg, .pdf); closes the figure."""
    plt = pyplot()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
