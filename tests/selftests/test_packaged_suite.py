"""The suite ships with the package: a wheel built from this checkout, installed into a clean virtual environment,
runs the gate from an empty folder with ``pytest --engine ... --hw ...`` and finds its thresholds and fixture model
inside the wheel, never in this checkout.

The environment reuses this interpreter's site-packages (a ``.pth`` line) so vLLM and the other dependencies are
not reinstalled; the wheel itself goes in ``--no-deps`` and comes first on ``sys.path``. ``PYTHONPATH`` is dropped
so the checkout cannot leak in. ``slow``: building the wheel and the inner runs take one to two minutes on a
busy 2-core machine (``.ci/run`` runs this module on its own).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_dsbench.testing.fake_engine import FakeConfig, FakeEngineThread

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SUITE_FILES = sorted(p.name for p in (REPO / "pytest_dsbench" / "suite").glob("*.py"))
CPU_CONTEXT = 2048  # thresholds/cpu.toml max_model_len


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("DSBENCH_")}


def run(args: list[str], cwd: Path, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)], out)
    assert built.returncode == 0, built.stderr[-2000:]
    return next(out.glob("pytest_dsbench-*.whl"))


@pytest.fixture(scope="module")
def venv_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed and this environment's packages beneath it."""
    venv = tmp_path_factory.mktemp("venv")
    assert run([sys.executable, "-m", "venv", "--without-pip", str(venv)], venv).returncode == 0
    python = venv / "bin" / "python"
    purelib = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], venv)
                   .stdout.strip())
    (purelib / "zz_reuse_test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                    venv)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return python


@pytest.fixture
def empty_folder(tmp_path: Path) -> Path:
    """An inference team's CI folder: no tests, no ini, no checkout."""
    folder = tmp_path / "ci"
    folder.mkdir()
    return folder


@pytest.fixture
def fake_tiny_r1() -> Iterator[FakeEngineThread]:
    """A compliant fake that serves the fixture model's name, so the suite reads the wheel's tiny-r1 tokenizer."""
    config = FakeConfig(model="tiny-r1", max_model_len=CPU_CONTEXT, faults=["reasoning_tokens_zero"])
    with FakeEngineThread(config) as engine:
        yield engine


def test_the_wheel_holds_the_suite_its_conftest_thresholds_and_fixtures(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"pytest_dsbench/suite/{name}" for name in SUITE_FILES} <= names
    for toml in (REPO / "thresholds").glob("*.toml"):
        assert f"pytest_dsbench/_data/thresholds/{toml.name}" in names
    for data in ("tiny-r1/config.json", "tiny-r1/reference.jsonl", "tiny-r1/tokenizer.json"):
        assert f"pytest_dsbench/_data/{data}" in names
    assert any(n.startswith("pytest_dsbench/_data/datasets/evalscope/") for n in names)
    assert not any("__pycache__" in n for n in names)


def test_the_installed_package_finds_its_data_inside_the_wheel(venv_python: Path, empty_folder: Path) -> None:
    script = (
        "from pytest_dsbench import suite, thresholds, session, reference_outputs\n"
        "from pytest_dsbench.accuracy import datasets\n"
        "for path in (suite.SUITE_DIR, thresholds.default_dir(), session.embedded_model_dir(),\n"
        "             reference_outputs.fixture_model_dir(), *datasets.bundled_dirs()):\n"
        "    print(path, path.is_dir())\n"
    )
    out = run([str(venv_python), "-c", script], empty_folder)
    assert out.returncode == 0, out.stderr[-2000:]
    site = str(venv_python.parent.parent)
    for line in out.stdout.splitlines():
        assert line.startswith(site) and line.endswith(" True"), out.stdout


def collected(result: subprocess.CompletedProcess[str]) -> int:
    """The count of ``N tests collected`` (or ``N/M``: N selected) in a ``--collect-only -q`` output."""
    found = re.findall(r"^(\d+)(?:/\d+)? tests? collected", result.stdout, flags=re.MULTILINE)
    assert result.returncode == 0 and found, result.stdout[-2000:] + result.stderr[-2000:]
    return int(found[-1])


def test_pytest_with_an_engine_in_an_empty_folder_collects_the_whole_packaged_suite(
    venv_python: Path, empty_folder: Path
) -> None:
    args = ["-m", "pytest", "--engine", "vllm", "--hw", "cpu", "--collect-only", "-q", "-p", "no:cacheprovider"]
    packaged = run([str(venv_python), *args], empty_folder)
    checkout = run([sys.executable, *args, str(REPO / "pytest_dsbench" / "suite")], REPO)
    assert collected(packaged) == collected(checkout) > 100
    assert str(REPO) not in packaged.stdout


def test_pyargs_collects_the_packaged_suite_too(venv_python: Path, empty_folder: Path) -> None:
    args = ["--pyargs", "pytest_dsbench.suite", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "api"]
    assert collected(run([str(venv_python), "-m", "pytest", *args], empty_folder)) > 50


def test_without_an_engine_or_server_named_pytest_leaves_the_folder_alone(
    venv_python: Path, empty_folder: Path
) -> None:
    result = run([str(venv_python), "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"], empty_folder)
    assert result.returncode == pytest.ExitCode.NO_TESTS_COLLECTED, result.stdout[-2000:]


def test_a_folder_with_tests_of_its_own_keeps_them(venv_python: Path, empty_folder: Path) -> None:
    (empty_folder / "test_own.py").write_text("def test_own(dsbench_options):\n    assert dsbench_options.engine\n")
    result = run([str(venv_python), "-m", "pytest", "--engine", "vllm", "-q", "-p", "no:cacheprovider"], empty_folder)
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-2000:]


def test_the_packaged_suite_runs_api_checks_against_a_server(
    venv_python: Path, empty_folder: Path, fake_tiny_r1: FakeEngineThread
) -> None:
    result = run(
        [str(venv_python), "-m", "pytest", "--base-url", fake_tiny_r1.base_url, "--hw", "cpu", "-m", "api",
         "-k", "A01 or A05 or C01 or D01", "-p", "no:cacheprovider", "-rfE"],
        empty_folder,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    passed = re.findall(r"(\d+) passed", result.stdout)
    assert passed and int(passed[-1]) >= 4 and " failed" not in result.stdout, result.stdout[-3000:]
