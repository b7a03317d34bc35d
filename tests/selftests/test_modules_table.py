"""Seed 002's tables: the embed_tokens layout, the per-module roofline table, terminal summary and HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_dsbench.modules import table
from pytest_dsbench.results import MetricResult, RunResults


def _result(metric: str, value: float, **workload: Any) -> dict[str, Any]:
    return {"metric": metric, "value": value, "workload": {"scale": "full", "dtype": "bf16", **workload}}


def _embed(variant: str, tokens: int, ms: float) -> dict[str, Any]:
    return _result("module_time_ms_median", ms, module="embed_tokens", variant=variant, tokens=tokens)


def test_embed_tokens_table_has_the_seeds_header_and_a_dash_where_a_variant_did_not_run() -> None:
    tables = table.collect([_embed("test_cpu", 1, 0.0034), _embed("test_gpu", 1, 0.0094),
                            _embed("test_cpu", 2, 0.004)])
    section = table.embed_section(tables)
    assert section is not None
    assert section.lines() == [
        "embed_tokens",
        "| tokens | test_cpu (ms) | test_cpu_h2d (ms) | test_gpu (ms) |",
        "|--------|---------------|-------------------|---------------|",
        "| 1      | 0.0034        | -                 | 0.0094        |",
        "| 2      | 0.0040        | -                 | -             |",
    ]


def test_module_table_shows_bandwidth_flops_fraction_bound_and_a_regression() -> None:
    point = {"module": "expert", "variant": "one", "tokens": 1}
    results = [
        _result("module_time_ms_median", 0.05, **point),
        _result("module_bandwidth_gb_s", 1762.0, **point),
        _result("module_tflop_s", 1.76, **point),
        _result("module_roofline_fraction", 0.587, **point),
        _result("device_peak_tflop_s", 700.0, dtype="bf16", device_name="H100"),
        _result("device_peak_gb_s", 3000.0, memory="device"),
    ]
    results[0].update(change_pct=25.0, regressed=True)
    tables = table.collect(results)
    assert table.module_section(tables, ("expert", "one", "bf16")).lines()[1:] == [
        "| tokens | time (ms) | GB/s | TFLOP/s | % of peak | bound  | vs baseline             |",
        "|--------|-----------|------|---------|-----------|--------|-------------------------|",
        "| 1      | 0.0500    | 1762 | 1.76    | 58.7      | memory | +25.0% slower REGRESSED |",
    ]
    assert table.peaks_line(tables) == "measured peaks on H100: bf16 700 TFLOP/s; bandwidth device 3000 GB/s"


def test_milliseconds_print_as_the_seed_does() -> None:
    assert [table.ms(v) for v in (0.0034, 1.1085, 12.3456, None)] == ["0.0034", "1.1085", "12.35", "-"]


def test_other_metrics_are_not_module_results() -> None:
    tables = table.collect([{"metric": "tpot_ms_mean", "value": 3.0, "workload": {}}])
    assert tables.empty and table.render(tables) == []


def test_time_series_per_module_for_the_plot() -> None:
    tables = table.collect([_embed("test_cpu", 2, 0.004), _embed("test_cpu", 1, 0.0034)])
    assert table.time_series(tables) == {"embed_tokens": {"test_cpu bf16": [(1.0, 0.0034), (2.0, 0.004)]}}


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write_sep(self, sep: str, title: str | None = None, **markup: bool) -> None:
        self.lines.append(f"== {title}")

    def write_line(self, line: str | bytes, **markup: bool) -> None:
        self.lines.append(str(line))


def _metric(metric: str, value: float, unit: str, **workload: Any) -> MetricResult:
    return MetricResult(test_id="tests/modules/test_modules.py::test_x", metric=metric, unit=unit, value=value,
                        extra={"workload": {"scale": "ci", "dtype": "bf16", **workload}})


def test_terminal_summary_prints_module_tables_instead_of_result_rows() -> None:
    from pytest_dsbench.report import write_terminal_summary

    results = RunResults([
        _metric("module_time_ms_median", 0.5, "ms", module="lm_head", variant="bf16-logits", tokens=4),
        MetricResult(test_id="t::slo", metric="tpot_ms_mean", unit="ms", value=20.0),
    ])
    out = _Writer()
    write_terminal_summary(out, engine=None, hw="cpu", results=results, history=None)
    text = "\n".join(out.lines)
    assert "lm_head [bf16-logits, bf16, torch reference]" in text and "| 4      | 0.5000    |" in text
    assert "tpot_ms_mean (ms)" in text and "module_time_ms_median (ms)" not in text


def test_html_report_has_the_module_tables_and_says_why_a_plot_is_missing(tmp_path: Path) -> None:
    from pytest_dsbench.history.compare import RegressLimits
    from pytest_dsbench.history.document import build
    from pytest_dsbench.history.session import HistorySession
    from pytest_dsbench.report import render_html

    items = [_metric("module_time_ms_median", 0.5, "ms", module="lm_head", variant="bf16-logits", tokens=t)
             for t in (1, 4)]
    doc = build(items, {"time": "2026-12-07T00:00:00+00:00"}, exitstatus=0, interrupted=False, run_name="r")
    history = HistorySession(root=tmp_path, folder=tmp_path, save_enabled=False, limits=RegressLimits())
    html = render_html(doc, history, [])
    assert "<h2>Modules (seed 002)</h2>" in html and "<h3>lm_head [bf16-logits, bf16, torch reference]</h3>" in html
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "pytest-dsbench[report]" in html  # the plot is skipped with a note naming the extra
    else:
        assert "lm_head: time vs tokens" in html


def _point(module: str, variant: str, tokens: int, fraction: float) -> list[dict[str, Any]]:
    point = {"module": module, "variant": variant, "tokens": tokens}
    return [_result("module_time_ms_median", 0.01, **point), _result("module_roofline_fraction", fraction, **point)]


def test_a_point_above_its_measured_peak_is_marked_and_explained_under_its_table() -> None:
    tables = table.collect([*_point("embed_tokens", "test_cpu", 256, 0.45),
                            *_point("embed_tokens", "test_cpu", 512, 4.729)])
    section = table.module_section(tables, ("embed_tokens", "test_cpu", "bf16"))
    assert [row[4] for row in section.rows] == ["45.0", "472.9 !"]
    assert section.marked == {(1, 4)}
    assert section.lines()[-1] == (
        "! 1 of 2 points above 100% of the measured peak (tokens 512; up to 472.9% at 512): the traffic model or "
        "the peak is wrong for them (data served from a cache, or a peak that is no ceiling), so they are no "
        "efficiencies")
    assert table.render(tables)[-1] == (
        "! points above 100% of a measured peak (marked !; see the note under each table) in: "
        "embed_tokens [test_cpu, bf16, torch reference]")


def test_a_run_within_its_peaks_has_no_mark_and_no_note() -> None:
    tables = table.collect([*_point("lm_head", "bf16-logits", 1, 0.989), *_point("lm_head", "bf16-logits", 2, 1.0)])
    section = table.module_section(tables, ("lm_head", "bf16-logits", "bf16"))
    assert [row[4] for row in section.rows] == ["98.9", "100.0"]
    assert not section.notes and not section.marked
    assert not any(table.is_flag_line(line) for line in table.render(tables))


def test_the_h2d_peak_says_which_copy_measured_it() -> None:
    tables = table.collect([_result("device_peak_gb_s", 52.1, memory="h2d", method="pinned 1024 MiB"),
                            _result("device_peak_gb_s", 2984.0, memory="device")])
    assert table.peaks_line(tables).endswith("bandwidth h2d 52.1 GB/s (pinned 1024 MiB), device 2984 GB/s")


def test_terminal_and_html_flag_a_point_above_its_peak(tmp_path: Path) -> None:
    from pytest_dsbench.history.compare import RegressLimits
    from pytest_dsbench.history.document import build
    from pytest_dsbench.history.session import HistorySession
    from pytest_dsbench.report import render_html, write_terminal_summary

    workload = {"module": "embed_tokens", "variant": "test_cpu", "tokens": 512}
    items = [_metric("module_time_ms_median", 0.04, "ms", **workload),
             _metric("module_roofline_fraction", 4.729, "", **workload)]
    out = _Writer()
    write_terminal_summary(out, engine=None, hw="cpu", results=RunResults(items), history=None)
    assert "| 512    | 0.0400    | -    | -       | 472.9 !   | -     | -           |" in out.lines
    assert sum(line.startswith("! ") for line in out.lines) == 2  # the note under the table and the summary
    doc = build(items, {"time": "2026-12-07T00:00:00+00:00"}, exitstatus=0, interrupted=False, run_name="r")
    history = HistorySession(root=tmp_path, folder=tmp_path, save_enabled=False, limits=RegressLimits())
    html = render_html(doc, history, [])
    assert '<td class="num ABOVE">472.9 !</td>' in html
    assert "<p class=ABOVE>! 1 of 1 points above 100% of the measured peak" in html


def test_tables_say_which_implementation_ran_so_torch_reference_is_not_read_as_engine_speed() -> None:
    tables = table.collect([*_point("moe", "gate", 1, 0.28), *_point("moe", "gate", 1, 0.5)])
    tables.series[("moe", "gate", "fp8")] = tables.series[("moe", "gate", "bf16")]
    assert table.module_section(tables, ("moe", "gate", "bf16")).title == "moe [gate, bf16, torch reference]"
    assert table.module_section(tables, ("moe", "gate", "fp8")).title == "moe [gate, fp8, vLLM kernels]"
    assert "bf16 modules are the torch reference" in table.heading(tables)
    assert "not an engine's fused kernels" in table.heading(tables)
