"""The history folder: numbered runs, concurrent savers, torn or interrupted runs, run references."""

from __future__ import annotations

import datetime as dt
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from pytest_dsbench.errors import DsbenchUsageError
from pytest_dsbench.history import document, storage
from pytest_dsbench.results import MetricResult

PROV = {
    "engine": "vllm",
    "engine_version": "0.32.0",
    "model": "tiny-r1",
    "hw": "cpu",
    "time": "2026-01-01T00:00:00+00:00",
    "git": {"id": "abc"},
}


def make_doc(value: float = 40.0, *, interrupted: bool = False) -> dict[str, object]:
    result = MetricResult(
        test_id="t.py::test_x",
        metric="tpot_ms_mean",
        unit="ms",
        value=value,
        samples=3,
        extra={"workload": {"n": 3}},
        sample_values=[value - 1, value, value + 1],
    )
    return document.build([result], PROV, exitstatus=0, interrupted=interrupted, run_name="r")


def save(folder: Path, value: float = 40.0, *, interrupted: bool = False) -> Path:
    name = storage.run_name("abc", dt.datetime(2026, 1, 1))
    return storage.save(folder, name, make_doc(value, interrupted=interrupted))


def _save_many(args: tuple[str, int]) -> list[str]:
    folder, count = args
    return [save(Path(folder), float(i)).name for i in range(count)]


def test_runs_are_numbered_in_a_machine_id_folder(tmp_path: Path) -> None:
    folder = storage.run_folder(tmp_path, "vllm", "va16/tp32-pp2")
    first, second = save(folder), save(folder)
    assert folder.name == "vllm-va16+tp32-pp2"
    assert first.parent.name == document.machine_id()
    assert first.name.startswith("0001_abc_20260101_000000_") and second.name.startswith("0002_")


def test_samples_round_trip_in_the_metric_unit(tmp_path: Path) -> None:
    run = storage.load(save(tmp_path / "f"))
    [entry] = run.entries
    assert entry.samples == pytest.approx([39.0, 40.0, 41.0])
    assert entry.value == 40.0 and entry.workload == {"n": 3} and entry.unit == "ms"
    assert run.doc["benchmarks"][0]["stats"]["data"] == pytest.approx([0.039, 0.040, 0.041])


def test_concurrent_savers_never_collide(tmp_path: Path) -> None:
    folder = tmp_path / "vllm-cpu"
    with ProcessPoolExecutor(max_workers=4) as pool:
        names = [n for batch in pool.map(_save_many, [(str(folder), 6)] * 4) for n in batch]
    files = storage.run_files(folder)
    assert len(files) == len(names) == 24
    assert sorted(int(p.name[:4]) for p in files) == list(range(1, 25))
    assert all(storage.load(p).entries for p in files)
    assert not list(folder.glob("*/.dsbench-*.tmp"))


def test_unreadable_and_temporary_files_are_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "vllm-cpu"
    good = save(folder)
    (good.parent / "0002_torn.json").write_text('{"benchmarks": [')
    (good.parent / ".dsbench-abc.tmp").write_text("half a run")
    warnings: list[str] = []
    runs = list(storage.iter_runs(folder, warnings))
    assert [r.path for r in runs] == [good]
    assert len(warnings) == 1 and "0002_torn.json is not readable JSON" in warnings[0]
    assert storage.resolve(tmp_path, folder, "latest").path == good


def test_latest_skips_interrupted_runs(tmp_path: Path) -> None:
    folder = tmp_path / "vllm-cpu"
    complete = save(folder)
    save(folder, interrupted=True)
    assert storage.resolve(tmp_path, folder, "latest").path == complete


@pytest.mark.parametrize("ref", ["2", "0002", "0002_abc", "latest", "vllm-cpu/2", "vllm-cpu/latest"])
def test_run_references(tmp_path: Path, ref: str) -> None:
    folder = tmp_path / "vllm-cpu"
    save(folder)
    second = save(folder)
    assert storage.resolve(tmp_path, folder, ref).path == second


def test_latest_tilde_n_counts_back(tmp_path: Path) -> None:
    folder = tmp_path / "vllm-cpu"
    first = save(folder)
    save(folder)
    assert storage.resolve(tmp_path, folder, "latest~1").path == first


def test_a_path_to_a_run_file_is_a_reference(tmp_path: Path) -> None:
    path = save(tmp_path / "elsewhere")
    assert storage.resolve(tmp_path, tmp_path / "vllm-cpu", str(path)).path == path


def test_an_ambiguous_prefix_names_the_candidates(tmp_path: Path) -> None:
    folder = tmp_path / "vllm-cpu"
    save(folder)
    save(folder)
    with pytest.raises(DsbenchUsageError, match="'000' is ambiguous"):
        storage.resolve(tmp_path, folder, "000")


def test_an_unknown_folder_lists_the_known_ones(tmp_path: Path) -> None:
    save(tmp_path / "vllm-cpu")
    with pytest.raises(DsbenchUsageError, match=r"no folder .*sglang-h20\. Folders in .*: vllm-cpu\."):
        storage.resolve(tmp_path, tmp_path / "vllm-cpu", "sglang-h20/latest")


def test_a_file_that_is_not_a_run_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "0001_x.json"
    path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(DsbenchUsageError, match="is not a pytest-benchmark result file"):
        storage.load(path)


def test_pytest_benchmark_file_storage_loads_our_runs(tmp_path: Path) -> None:
    from pytest_benchmark.logger import Logger
    from pytest_benchmark.storage.file import FileStorage

    save(tmp_path / "vllm-cpu")
    benches = list(FileStorage(tmp_path / "vllm-cpu", logger=Logger(Logger.QUIET)).load_benchmarks())
    assert [b["fullname"] for b in benches] == ["t.py::test_x::tpot_ms_mean[n=3]"]
    assert benches[0]["rounds"] == 3 and benches[0]["median"] == pytest.approx(0.040)


INTERRUPTED = """
def test_first(dsbench_gate):
    dsbench_gate.record("tpot_ms_mean", 40.0, samples=[39.0, 40.0, 41.0])

def test_second():
    raise KeyboardInterrupt
"""


def test_an_interrupted_session_stores_a_readable_run_marked_interrupted(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_stop=INTERRUPTED)
    result = pytester.runpytest(
        "--dsbench-storage", "history", "-p", "no:cacheprovider", no_reraise_ctrlc=True
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    [path] = storage.run_files(pytester.path / "history" / "vllm-cpu")
    run = storage.load(path)
    assert run.interrupted and [e.metric for e in run.entries] == ["tpot_ms_mean"]


def test_comparable_history_keeps_earlier_runs_of_the_same_engine_hw_and_model(tmp_path: Path) -> None:
    folder = tmp_path / "vllm-cpu"
    first = save(folder)
    save(folder, interrupted=True)
    name = storage.run_name("abc", dt.datetime(2026, 1, 1))
    storage.save(folder, name, {**make_doc(), "dsbench": {"provenance": {**PROV, "model": "other"}}})
    third = save(folder)
    save(folder)
    baseline = storage.load(third)
    assert [r.path for r in storage.comparable_history(baseline)] == [first, third]
    assert [r.path for r in storage.comparable_history(baseline, limit=1)] == [third]
