"""Seed 002's tables from module results: recorded in this run (terminal) or read from its document (HTML).

* the embed_tokens table exactly as the seed prints it: ``| tokens | test_cpu (ms) | test_cpu_h2d (ms) |
  test_gpu (ms) |``;
* one table per module, variant and dtype: time against tokens with achieved GB/s, TFLOP/s, the fraction of the
  measured roofline, which side bounds it and the change against the baseline run (``REGRESSED`` when the gate
  says so);
* the measured peaks the fractions refer to.

A fraction above 100% contradicts the run's own measured peak (the traffic model or the peak is wrong for that
point: rows served from a cache, a peak that is no ceiling); it is never printed silently: its cell is marked
:data:`ABOVE_PEAK`, a note under the table says what it means, and the run's tables end with a line naming the
tables that have such points.

Results come in as plain mappings (``metric``, ``value``, ``workload`` and, when compared, ``change_pct`` and
``regressed``), the shape both :class:`~pytest_dsbench.results.MetricResult` and the stored document give.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_dsbench.modules.bench import DERIVED_METRICS, PEAK_METRICS, TIME_METRIC
from pytest_dsbench.modules.impl import IMPLEMENTATION_NOTE, IMPLEMENTATIONS, KERNELS, ROUTINGS

MODULE_METRICS = frozenset((TIME_METRIC, *DERIVED_METRICS, *PEAK_METRICS))
MODULE_ORDER = ("embed_tokens", "mlp", "expert", "moe", "mla_prefill", "mla_decode", "lm_head")
EMBED_VARIANTS = ("test_cpu", "test_cpu_h2d", "test_gpu")
"""The seed's embed_tokens columns; the tests' variant names."""
VARIANT_ORDER = (*EMBED_VARIANTS, *ROUTINGS)
ABOVE_PEAK = "!"
"""The mark of a % of peak above 100, and the first character of the note that explains it."""


def is_module_metric(metric: str) -> bool:
    return metric in MODULE_METRICS


@dataclass
class Point:
    """One module benchmark: its time and derived figures at one token count."""

    tokens: int
    values: dict[str, float] = field(default_factory=dict)
    change_pct: float | None = None
    regressed: bool | None = None


@dataclass
class ModuleTables:
    """Module results grouped by (module, variant, dtype), points by token count, and the peaks."""

    series: dict[tuple[str, str, str], dict[int, Point]] = field(default_factory=dict)
    peaks_tflop_s: dict[str, float] = field(default_factory=dict)
    peaks_gb_s: dict[str, float] = field(default_factory=dict)
    peak_methods: dict[str, str] = field(default_factory=dict)
    """How a bandwidth peak was measured, where the run says (``h2d``: the best of pinned and pageable copies)."""
    scale: str | None = None
    device: str | None = None

    @property
    def empty(self) -> bool:
        return not self.series and not self.peaks_tflop_s


def _order(key: tuple[str, str, str]) -> tuple[int, str, int, str]:
    module, variant, dtype = key
    rank = MODULE_ORDER.index(module) if module in MODULE_ORDER else len(MODULE_ORDER)
    variant_rank = VARIANT_ORDER.index(variant) if variant in VARIANT_ORDER else len(VARIANT_ORDER)
    return rank, dtype, variant_rank, variant


def collect(results: Iterable[Mapping[str, Any]]) -> ModuleTables:
    """Group module results (other metrics are ignored)."""
    out = ModuleTables()
    for result in results:
        metric, workload = str(result.get("metric")), dict(result.get("workload") or {})
        value = result.get("value")
        if metric not in MODULE_METRICS or not isinstance(value, int | float):
            continue
        out.scale = str(workload.get("scale") or out.scale)
        if metric == "device_peak_tflop_s":
            out.peaks_tflop_s[str(workload.get("dtype"))] = float(value)
            out.device = str(workload.get("device_name") or out.device)
            continue
        if metric == "device_peak_gb_s":
            out.peaks_gb_s[str(workload.get("memory"))] = float(value)
            if workload.get("method"):
                out.peak_methods[str(workload.get("memory"))] = str(workload["method"])
            continue
        key = (str(workload.get("module")), str(workload.get("variant")), str(workload.get("dtype")))
        tokens = int(workload.get("tokens") or 0)
        point = out.series.setdefault(key, {}).setdefault(tokens, Point(tokens))
        point.values[metric] = float(value)
        if metric == TIME_METRIC:
            point.change_pct, point.regressed = result.get("change_pct"), result.get("regressed")
    out.series = dict(sorted(out.series.items(), key=lambda item: _order(item[0])))
    return out


def from_metric_results(items: Iterable[Any]) -> ModuleTables:
    """:func:`collect` over :class:`~pytest_dsbench.results.MetricResult` objects."""
    return collect({"metric": i.metric, "value": i.value, "workload": i.workload, "change_pct": i.change_pct,
                    "regressed": i.regressed} for i in items)


def ms(value: float | None) -> str:
    """Milliseconds as the seed prints them (4 decimals; 2 from 10 ms up)."""
    if value is None:
        return "-"
    return f"{value:.4f}" if value < 10 else f"{value:.2f}"


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"


def markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    """A pipe table with columns as wide as their widest cell (the seed's layout)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)]


@dataclass(frozen=True)
class Section:
    """One table: a title, the header and the rows (cells as printed)."""

    title: str
    header: list[str]
    rows: list[list[str]]
    notes: tuple[str, ...] = ()
    """Lines printed under the table (why cells are marked)."""
    marked: frozenset[tuple[int, int]] = frozenset()
    """(row, column) of the cells a note refers to, for the HTML report to highlight."""

    def lines(self) -> list[str]:
        return [self.title, *markdown(self.header, self.rows), *self.notes]


def embed_section(tables: ModuleTables, dtype: str = "bf16") -> Section | None:
    """Seed 002's embed_tokens table (``-`` where a variant did not run, e.g. no GPU)."""
    columns = [tables.series.get(("embed_tokens", v, dtype), {}) for v in EMBED_VARIANTS]
    tokens = sorted({t for column in columns for t in column})
    if not tokens:
        return None
    rows = [[str(t), *(ms(c[t].values.get(TIME_METRIC)) if t in c else "-" for c in columns)] for t in tokens]
    return Section("embed_tokens", ["tokens", *(f"{v} (ms)" for v in EMBED_VARIANTS)], rows)


def bound(point: Point, tables: ModuleTables, dtype: str) -> str:
    """``memory`` or ``compute``: the side of the ridge (peak FLOP/s / peak device bandwidth) the call sits on."""
    gb_s, tflop_s = point.values.get("module_bandwidth_gb_s"), point.values.get("module_tflop_s")
    peak_flop = tables.peaks_tflop_s.get(dtype, tables.peaks_tflop_s.get("bf16"))
    peak_bw = tables.peaks_gb_s.get("device")
    if not gb_s or tflop_s is None or not peak_flop or not peak_bw:
        return "-"
    return "compute" if tflop_s * 1e3 / gb_s > peak_flop * 1e3 / peak_bw else "memory"


def change(point: Point) -> str:
    """The time's change against the baseline run (``-`` when not compared)."""
    if point.change_pct is None:
        return "-"
    text = f"{point.change_pct:+.1f}% " + ("slower" if point.change_pct > 0 else "faster")
    return text + " REGRESSED" if point.regressed else text


MODULE_HEADER = ["tokens", "time (ms)", "GB/s", "TFLOP/s", "% of peak", "bound", "vs baseline"]
FRACTION_COLUMN = MODULE_HEADER.index("% of peak")


def above_peak(point: Point) -> bool:
    """The point's fraction of the roofline is above 1: faster than the measured peaks allow."""
    fraction = point.values.get("module_roofline_fraction")
    return fraction is not None and fraction > 1.0


def fraction_cell(point: Point) -> str:
    fraction = point.values.get("module_roofline_fraction")
    if fraction is None:
        return "-"
    return f"{fraction * 100:.1f}" + (f" {ABOVE_PEAK}" if above_peak(point) else "")


def above_peak_note(points: list[Point]) -> str | None:
    """What the marked cells mean: how many, the worst, and that they are no efficiencies (None when none)."""
    over = [p for p in points if above_peak(p)]
    if not over:
        return None
    worst = max(over, key=lambda p: p.values["module_roofline_fraction"])
    tokens = ", ".join(str(p.tokens) for p in over)
    return (f"{ABOVE_PEAK} {len(over)} of {len(points)} points above 100% of the measured peak (tokens {tokens}; "
            f"up to {worst.values['module_roofline_fraction'] * 100:.1f}% at {worst.tokens}): the traffic model or "
            "the peak is wrong for them (data served from a cache, or a peak that is no ceiling), so they are no "
            "efficiencies")


def module_section(tables: ModuleTables, key: tuple[str, str, str]) -> Section:
    """One module's time, GB/s, TFLOP/s, % of the roofline, bound and change against the baseline per tokens;
    fractions above 100% marked and explained under the table."""
    points = [point for _, point in sorted(tables.series[key].items())]
    rows = [[str(p.tokens), ms(p.values.get(TIME_METRIC)), _num(p.values.get("module_bandwidth_gb_s")),
             _num(p.values.get("module_tflop_s")), fraction_cell(p), bound(p, tables, key[2]), change(p)]
            for p in points]
    note = above_peak_note(points)
    marked = frozenset((i, FRACTION_COLUMN) for i, p in enumerate(points) if above_peak(p))
    module, variant, dtype = key
    return Section(f"{module} [{variant}, {dtype}, {implementation(dtype)}]", MODULE_HEADER, rows,
                   (note,) if note else (), marked)


def implementation(dtype: str) -> str:
    """Which implementation ran a dtype's modules (``torch reference`` for bf16, ``vLLM kernels`` for fp8)."""
    kernels = KERNELS.get(dtype)
    return IMPLEMENTATIONS.get(kernels, kernels) if kernels else "?"


def peaks_line(tables: ModuleTables) -> str:
    flops = ", ".join(f"{d} {_num(v)} TFLOP/s" for d, v in tables.peaks_tflop_s.items()) or "not measured"
    bws = ", ".join(f"{m} {_num(v)} GB/s" + (f" ({tables.peak_methods[m]})" if m in tables.peak_methods else "")
                    for m, v in tables.peaks_gb_s.items()) or "not measured"
    return f"measured peaks on {tables.device or 'the device'}: {flops}; bandwidth {bws}"


def heading(tables: ModuleTables) -> str:
    return f"modules (seed 002) at scale {tables.scale or '?'}; {peaks_line(tables)}. {IMPLEMENTATION_NOTE}"


def sections(tables: ModuleTables) -> list[Section]:
    """The seed's embed_tokens table, then one table per module series."""
    embed = embed_section(tables)
    return ([embed] if embed else []) + [module_section(tables, key) for key in tables.series]


def above_peak_summary(all_sections: list[Section]) -> str | None:
    """One line naming the tables with points above their measured peak (None when there are none)."""
    flagged = [s.title for s in all_sections if s.marked]
    if not flagged:
        return None
    return (f"{ABOVE_PEAK} points above 100% of a measured peak (marked {ABOVE_PEAK}; see the note under each "
            f"table) in: {'; '.join(flagged)}")


def is_flag_line(line: str) -> bool:
    """A note or summary line about points above their peak (the terminal highlights them)."""
    return line.startswith(f"{ABOVE_PEAK} ")


def render(tables: ModuleTables) -> list[str]:
    """Every table as text lines: the heading with the peaks, then each section, then the summary of points above
    their peak, if any."""
    if tables.empty:
        return []
    lines = [heading(tables)]
    all_sections = sections(tables)
    for section in all_sections:
        lines += ["", *section.lines()]
    summary = above_peak_summary(all_sections)
    return [*lines, "", summary] if summary else lines


def time_series(tables: ModuleTables) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Per module: ``(tokens, median ms)`` points per ``variant, dtype`` (the plot of time against tokens)."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for (module, variant, dtype), points in tables.series.items():
        line = [(float(t), p.values[TIME_METRIC]) for t, p in sorted(points.items()) if TIME_METRIC in p.values]
        if line:
            out.setdefault(module, {})[f"{variant} {dtype}"] = line
    return out
