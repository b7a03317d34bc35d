"""Accuracy floors (seed 004): each data set ``[accuracy.<name>]`` of the hardware profile, scored by
EvalScope against the engine's OpenAI endpoint with the profile's ``[accuracy_settings]`` (DeepSeek-R1's
temperature 0.6, top_p 0.95 and the answer after ``</think>`` unless the profile says otherwise), must reach
its floor.

Skipped while a routing patch (``--eplb``) is active: synthetic routing makes accuracy meaningless.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_dsbench.accuracy import AccuracyError, evaluate, record_and_check
from pytest_dsbench.accuracy.check import SAMPLES_FILE
from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.gate import Gate
from pytest_dsbench.options import DsbenchOptions
from pytest_dsbench.run import DsbenchRun
from pytest_dsbench.thresholds import HardwareProfile

pytestmark = pytest.mark.accuracy


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per ``[accuracy.<name>]`` table of the hardware profile."""
    if "accuracy_dataset" not in metafunc.fixturenames:
        return
    run = DsbenchRun.of(metafunc.config)
    names = sorted(run.hw.accuracy)
    if names:
        metafunc.parametrize("accuracy_dataset", names)
        return
    hw = run.options.hw
    metafunc.parametrize("accuracy_dataset", [pytest.param(
        None, id="none", marks=pytest.mark.skip(reason=f"hw profile {hw} lists no [accuracy.*] floors"))])


def test_accuracy_meets_floor(accuracy_dataset: str, dsbench_engine: EngineInfo, hw_profile: HardwareProfile,
                              dsbench_options: DsbenchOptions, dsbench_gate: Gate,
                              dsbench_artifacts: Path) -> None:
    try:
        task, outcome = evaluate(accuracy_dataset, engine=dsbench_engine, profile=hw_profile,
                                 options=dsbench_options, folder=dsbench_artifacts)
    except AccuracyError as exc:
        error = str(exc)
    else:
        record_and_check(dsbench_gate, task, outcome, dsbench_artifacts / SAMPLES_FILE)
        return
    pytest.fail(f"[accuracy.{accuracy_dataset}] {error}", pytrace=False)
