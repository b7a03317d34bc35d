"""pytest_dsbench/suite/test_throughput.py end to end: a ``method = "random"`` entry is held to its floors, records
its error rate, and a starved client errors it as INVALID instead of judging it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

Runner = Callable[..., pytest.RunResult]



def test_a_workload_above_its_floor_passes(run_small_random_workload: Runner, fake: Any) -> None:
    server = fake(ttft_ms=5, itl_ms=5)
    result = run_small_random_workload(server.base_url, output_min=1.0)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*output_tok_s (tok/s)*>= 1*PASS", "*error_rate (fraction)*<= 0*PASS"])


def test_a_workload_below_its_floor_fails_naming_value_floor_and_key(
    run_small_random_workload: Runner, fake: Any
) -> None:
    server = fake(ttft_ms=5, itl_ms=20)
    result = run_small_random_workload(server.base_url, output_min=1e6)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*output_tok_s = * tok/s, limit >= 1e+06 tok/s (fake.toml ?throughput.random_small? output_tok_s_min)*"]
    )


def test_a_starved_client_errors_the_throughput_test_as_invalid_in_one_message(
    run_small_random_workload: Runner, fake: Any, starve_client: tuple[str, ...]
) -> None:
    server = fake(ttft_ms=10, itl_ms=10)
    result = run_small_random_workload(server.base_url, *starve_client)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*INVALID run, the load generator was the bottleneck: *"])
    result.stdout.no_fnmatch_line("*raise InvalidRun*")
