"""The ``pytest-dsbench`` command line: list, compare (with --fail), export, plot, and one-line errors."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_dsbench import cli
from pytest_dsbench.history import document, storage
from pytest_dsbench.results import MetricResult

TEST = "pytest_dsbench/suite/test_slo.py::test_sweep"


def _result(metric: str, samples: np.ndarray, workload: dict[str, Any], unit: str) -> MetricResult:
    values = [float(v) for v in samples]
    return MetricResult(
        test_id=TEST,
        metric=metric,
        unit=unit,
        value=float(np.mean(values)),
        samples=len(values),
        extra={"workload": workload},
        sample_values=values,
    )


def store(root: Path, scale: float, *, engine: str = "vllm", model: str = "tiny-r1", seed: int = 0) -> Path:
    """A stored sweep run whose latencies are multiplied (and throughput divided) by ``scale``."""
    rng = np.random.default_rng(seed)
    items = []
    for concurrency in (1, 4):
        workload = {"max_concurrency": concurrency}
        items.append(_result("tpot_ms_mean", rng.normal(20 + 5 * concurrency, 1, 40) * scale, workload, "ms"))
        items.append(_result("output_tok_s", rng.normal(50 * concurrency, 2, 40) / scale, workload, "tok/s"))
    prov = {
        "engine": engine,
        "engine_version": "0.32.0",
        "model": model,
        "hw": "cpu",
        "git": {"id": "abc"},
        "time": "2026-01-01T00:00:00+00:00",
        "hw_profile": {"devices": 2},
        "regress_pct": {"tpot_ms_mean": 10, "output_tok_s": 10},
        "confidence": 0.99,
    }
    doc = document.build(items, prov, exitstatus=0, interrupted=False, run_name="r")
    return storage.save(
        storage.run_folder(root, engine, "cpu"), storage.run_name("abc", dt.datetime(2026, 1, 1)), doc
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    store(tmp_path, 1.0, seed=1)
    store(tmp_path, 1.01, seed=2)
    store(tmp_path, 1.3, seed=3)
    return tmp_path


def run_cli(root: Path, *args: str) -> int:
    return cli.main(["--storage", str(root), *args])


def test_list_shows_every_run_with_its_engine_and_counts(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(root, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "time", "engine", "model", "results", "failed", "regressed"]
    assert [line.split()[0][:13] for line in lines[1:]] == ["vllm-cpu/0001", "vllm-cpu/0002", "vllm-cpu/0003"]
    assert "vllm 0.32.0" in lines[1] and "tiny-r1" in lines[1]


def test_compare_fail_exits_1_on_a_regression(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(root, "compare", "1", "latest", "--fail") == 1
    out = capsys.readouterr().out
    assert "4 compared, 4 regressed, 0 refused (99% confidence)" in out
    assert re.search(r"test_slo.py::test_sweep\[max_concurrency=1\] +tpot_ms_mean \(ms\) .* REGRESSED", out)
    assert "REGRESSED pytest_dsbench/suite/test_slo.py::test_sweep: tpot_ms_mean regressed against run" in out
    assert "expected at most 10% worse (limits stored with vllm-cpu/0003_" in out


def test_compare_of_unchanged_runs_passes(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(root, "compare", "1", "2", "--fail") == 0
    assert "0 regressed" in capsys.readouterr().out


def test_compare_limits_from_the_command_line_win(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run_cli(
            root,
            "compare",
            "1",
            "3",
            "--regress",
            "tpot_ms_mean:50",
            "--regress",
            "output_tok_s:50",
            "--fail",
        )
        == 0
    )
    assert "4 compared, 0 regressed" in capsys.readouterr().out


def test_compare_refuses_another_model_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store(tmp_path, 1.0)
    store(tmp_path, 1.0, model="DeepSeek-R1")
    assert run_cli(tmp_path, "compare", "1", "2") == 2
    err = capsys.readouterr().err
    assert err.startswith("pytest-dsbench: error: refusing to compare vllm-cpu/0002_")
    assert "model tiny-r1 (baseline) vs DeepSeek-R1 (this run). Pass --force" in err
    assert run_cli(tmp_path, "compare", "1", "2", "--force") == 0


def test_compare_across_engine_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store(tmp_path, 1.0)
    store(tmp_path, 1.0, engine="sglang")
    assert run_cli(tmp_path, "compare", "vllm-cpu/1", "sglang-cpu/1") == 2
    assert "engine vllm (baseline) vs sglang (this run)" in capsys.readouterr().err
    assert run_cli(tmp_path, "compare", "vllm-cpu/1", "sglang-cpu/1", "--force") == 0


def test_export_csv_has_one_row_per_result(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(root, "export") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 12 and list(rows[0]) == list(cli.EXPORT_COLUMNS)
    assert rows[0]["metric"] == "tpot_ms_mean" and json.loads(rows[0]["workload"]) == {"max_concurrency": 1}


def test_export_json_with_samples_to_a_file(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    assert run_cli(root, "export", "latest", "--format", "json", "--samples", "-o", str(out)) == 0
    data = json.loads(out.read_text())
    assert data["runs"][0]["provenance"]["engine"] == "vllm"
    assert len(data["results"]) == 4 and len(data["results"][0]["sample_values"]) == 40


@pytest.mark.parametrize(
    "args",
    [
        ("cdf", "1", "3"),
        ("cdf", "1", "--metric", "tpot"),
        ("throughput", "1", "3"),
        ("pareto", "1", "2", "3"),
        ("history", "tpot_ms_mean"),
    ],
)
def test_plots_are_written(root: Path, tmp_path: Path, args: tuple[str, ...]) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / f"{args[0]}.png"
    assert run_cli(root, "plot", *args, "-o", str(out)) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_names_the_extra(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert run_cli(root, "plot", "cdf", "1") == 2
    assert "pip install 'pytest-dsbench[report]'" in capsys.readouterr().err


def test_plot_of_data_a_run_lacks_is_a_clear_error(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    assert run_cli(root, "plot", "cdf", "1", "--metric", "ttft") == 2
    assert capsys.readouterr().err.startswith(
        "pytest-dsbench: error: no per-request ttft samples in vllm-cpu/0001_"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("compare", "9", "1"), "no stored run '9': stored runs in "),
        (("--engine", "vllm", "list"), "give both --engine and --hw"),
    ],
)
def test_bad_input_is_one_line_on_stderr_with_exit_code_2(
    root: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    assert run_cli(root, *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_an_empty_storage_says_how_to_fill_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(tmp_path / "none", "export") == 2
    assert "no stored runs under" in capsys.readouterr().err


def test_several_folders_need_engine_and_hw(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store(tmp_path, 1.0)
    store(tmp_path, 1.0, engine="sglang")
    assert run_cli(tmp_path, "export") == 2
    assert "holds several folders (sglang-cpu, vllm-cpu)" in capsys.readouterr().err
    assert run_cli(tmp_path, "--engine", "sglang", "--hw", "cpu", "export") == 0


def test_python_dash_m_runs_the_same_command_line(root: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest_dsbench", "--storage", str(root), "list"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and "vllm-cpu/0003_" in done.stdout
