"""End-of-run reporting: the terminal table, the JSON report and the self-contained HTML report."""

from __future__ import annotations

import json
import sys

import pytest

from pytest_dsbench.report import change_text, display_test, varying_keys

RECORDS = """
import random

def test_slo(dsbench_gate):
    rng = random.Random(1)
    tpot = [40 + rng.random() for _ in range(50)]
    load = {"max_concurrency": 4}
    mean = sum(tpot) / len(tpot)
    dsbench_gate.record("tpot_ms_mean", mean, samples=tpot, limit=50.0, limit_source="cpu.toml",
                        workload=load)
    dsbench_gate.record("ttft_ms_p99", 120.0, samples=[100 + i for i in range(21)], workload=load)
    dsbench_gate.check()

def test_throughput(dsbench_gate):
    dsbench_gate.record("output_tok_s", 12.0, limit=20.0, limit_source="cpu.toml [throughput.deeplink]")
    dsbench_gate.check()
"""


@pytest.fixture
def reported(pytester: pytest.Pytester) -> pytest.RunResult:
    pytester.makepyfile(test_records=RECORDS)
    return pytester.runpytest("--dsbench-storage", "history", "-p", "no:cacheprovider")


def test_the_terminal_table_shows_limit_measured_and_verdict(reported: pytest.RunResult) -> None:
    reported.assert_outcomes(passed=1, failed=1)
    reported.stdout.fnmatch_lines(
        [
            "*= dsbench =*",
            "test * metric (unit) * measured * limit * baseline * change * n  verdict",
            "test_records.py::test_slo *tpot_ms_mean (ms) * 40.* <= 50 * - * - * 50  PASS",
            "test_records.py::test_slo *ttft_ms_p99 (ms) * 120 * - * - * - * 21  -",
            "test_records.py::test_throughput *output_tok_s (tok/s) * 12 * >= 20 * - * - * 0  FAIL",
            "history: stored as history/vllm-cpu/*/0001_*.json",
            "reports: dsbench-artifacts/dsbench-report.json, dsbench-artifacts/dsbench-report.html",
        ]
    )


def test_a_missed_limit_fails_the_test_saying_expected_and_measured(reported: pytest.RunResult) -> None:
    reported.stdout.fnmatch_lines(
        ["*output_tok_s = 12 tok/s, limit >= 20 tok/s (cpu.toml [[]throughput.deeplink]); 0 samples*"]
    )


def test_the_json_report_has_provenance_results_and_a_summary(
    pytester: pytest.Pytester, reported: pytest.RunResult
) -> None:
    report = json.loads((pytester.path / "dsbench-artifacts" / "dsbench-report.json").read_text())
    assert report["provenance"]["engine"] == "vllm" and report["provenance"]["hw"] == "cpu"
    assert report["summary"] == {"results": 3, "failed": 1, "regressed": 0, "refused": 0, "invalid": 0}
    tpot = next(r for r in report["results"] if r["metric"] == "tpot_ms_mean")
    assert tpot["verdict"] == "PASS" and tpot["sample_stats"]["n"] == 50
    assert 40 < tpot["sample_stats"]["median"] < 41
    assert report["stored_as"].endswith(".json")


def test_the_html_report_holds_the_table_and_inline_plots(
    pytester: pytest.Pytester, reported: pytest.RunResult
) -> None:
    pytest.importorskip("matplotlib")
    page = (pytester.path / "dsbench-artifacts" / "dsbench-report.html").read_text()
    assert "<h1>pytest-dsbench: vllm on cpu</h1>" in page
    assert "<td class=FAIL>FAIL</td>" in page and "tpot_ms_mean (ms)" in page
    assert page.count("<svg") == 2, "TPOT CDF and TTFT CDF"
    assert "TPOT CDF" in page and "TTFT CDF" in page


def test_without_matplotlib_the_html_report_names_the_extra(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    pytester.makepyfile(test_records=RECORDS)
    pytester.runpytest("--dsbench-storage", "none", "-p", "no:cacheprovider").assert_outcomes(
        passed=1, failed=1
    )
    page = (pytester.path / "dsbench-artifacts" / "dsbench-report.html").read_text()
    assert "&#x27;pytest-dsbench[report]&#x27;" in page and "<svg" not in page


def test_a_comparison_puts_baseline_and_change_in_the_table(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_records=RECORDS)
    pytester.runpytest("--dsbench-storage", "history", "-p", "no:cacheprovider")
    result = pytester.runpytest(
        "--dsbench-storage", "history", "--dsbench-compare", "latest", "-p", "no:cacheprovider"
    )
    result.stdout.fnmatch_lines(["*tpot_ms_mean (ms) * 40.* <= 50 * 40.* * +0.0% same * 50  PASS"])
    page = (pytester.path / "dsbench-artifacts" / "dsbench-report.html").read_text()
    assert "baseline</th><td>vllm-cpu/0001_" in page


def test_no_results_means_no_dsbench_section(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    assert True\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*= dsbench =*")
    assert not (pytester.path / "dsbench-artifacts" / "dsbench-report.json").exists()


@pytest.mark.parametrize(
    ("value", "baseline", "worse_pct", "text"),
    [
        (52.0, 40.0, 30.0, "+30.0% worse"),
        (80.0, 100.0, 20.0, "-20.0% worse"),
        (120.0, 100.0, -20.0, "+20.0% better"),
        (1.0, None, None, "-"),
        (0.0, 0.0, 0.0, "same"),
    ],
)
def test_change_text_says_the_change_and_what_it_means(
    value: float, baseline: float | None, worse_pct: float | None, text: str
) -> None:
    assert change_text(value, baseline, worse_pct) == text


def test_display_test_drops_folders_and_appends_the_workload() -> None:
    assert display_test("pytest_dsbench/suite/test_slo.py::test_x", {"c": 4}) == "test_slo.py::test_x[c=4]"
    assert len(display_test("a.py::" + "x" * 80, {})) == 48


def test_display_test_keeps_the_distinguishing_workload_keys_of_a_long_test_id() -> None:
    text = display_test("t.py::test_" + "x" * 60, {"input_len": 1024, "seed": 1}, keys={"input_len"})
    assert text.endswith("...[input_len=1024]") and len(text) == 48


def test_only_workload_keys_that_vary_within_a_test_are_shown() -> None:
    keys = varying_keys([("t", "m", {"c": 1, "n": 64}), ("t", "m", {"c": 4, "n": 64}), ("u", "m", {"n": 1})])
    assert keys == {("t", "m"): {"c"}, ("u", "m"): set()}
