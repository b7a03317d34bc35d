"""The capacity-under-SLO method end to end (pytest_dsbench/suite/test_throughput.py against fake engines): the
largest concurrency or request rate meeting any combination of latency and goodput limits, every repeat, and
how it fails; the entry's validation."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_dsbench.errors import ThresholdsError
from pytest_dsbench.testing.fake_process import ServerProcess
from pytest_dsbench.thresholds import load

Runner = Callable[..., pytest.RunResult]

PROFILE = """[deployment]
max_model_len = 4096
max_input_len = 2048
max_concurrency = 16
[slo]
error_rate_max = 0.0
[throughput.capacity]
method = "capacity"
input_len = 32
output_len = 16
num_prompts = 8
repeats = 2
max_probes = 6
{keys}
"""


@pytest.fixture
def run_capacity(run_on_fake_hw: Runner) -> Runner:
    def run(server: ServerProcess, keys: str, *args: str) -> pytest.RunResult:
        return run_on_fake_hw("test_throughput.py", server.base_url, PROFILE.format(keys=keys), *args)

    return run


def search_json(pytester: pytest.Pytester) -> dict[str, Any]:
    path = pytester.path / "artifacts" / "load" / "methods" / "capacity" / "capacity.json"
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def test_fast_engine_meets_the_limits_at_the_top_of_the_range_in_every_repeat(
    pytester: pytest.Pytester, run_capacity: Runner, fake: Any
) -> None:
    keys = "high = 8\ntpot_ms_p90_max = 50.0\nttft_ms_p99_max = 1000.0\nmax_concurrency_under_slo_min = 4"
    result = run_capacity(fake(ttft_ms=5, itl_ms=2), keys)
    result.assert_outcomes(passed=1)
    found = search_json(pytester)
    assert found["best"] == 8 and found["bracket"] == [8, None] and len(found["probes"]) == 1
    assert len(found["probes"][0]["values"]["tpot_ms_p90"]) == 2  # both repeats measured
    result.stdout.fnmatch_lines(["*max_concurrency_under_slo (req)*8 * >= 4 * 2  PASS*"])


def test_search_finds_where_latency_crosses_the_limits(
    pytester: pytest.Pytester, run_capacity: Runner, fake: Any
) -> None:
    # TPOT ~ 4 + 8 x requests running: crosses 50 ms near 6
    result = run_capacity(fake(itl_ms=4, itl_ms_per_running=8), "high = 16\ntpot_ms_p90_max = 50.0")
    result.assert_outcomes(passed=1)
    found = search_json(pytester)
    assert 3 <= found["best"] < 16 and found["bracket"][1] is not None and found["bracket"][1] > found["best"]
    assert all(p["passed"] == (p["point"] <= found["best"]) for p in found["probes"]), found["probes"]
    failing = next(p for p in found["probes"] if not p["passed"])
    assert "tpot_ms_p90" in failing["why"] and "> 50" in failing["why"]


def test_request_rate_search_probes_poisson_arrivals(
    pytester: pytest.Pytester, run_capacity: Runner, fake: Any
) -> None:
    keys = 'search = "request_rate"\nlow = 2.0\nhigh = 16.0\nrate_step = 2.0\nttft_ms_p90_max = 1000.0'
    result = run_capacity(fake(ttft_ms=5, itl_ms=2), keys)
    result.assert_outcomes(passed=1)
    found = search_json(pytester)
    assert found["search"] == "request_rate" and found["best"] == 16.0
    result.stdout.fnmatch_lines(["*max_request_rate_under_slo (req/s)*16*"])


def test_goodput_floor_is_a_probe_limit(pytester: pytest.Pytester, run_capacity: Runner, fake: Any) -> None:
    keys = "high = 4\ngoodput_tpot_ms_max = 30.0\ngoodput_fraction_min = 0.9"
    result = run_capacity(fake(itl_ms=60), keys)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*no concurrency in ?1, 4? meets goodput_fraction >= 0.9 in every one of 2 repeats (the lowest "
         "concurrency fails; probes: 4: repeat 1: goodput_fraction 0 < 0.9*"]
    )


def test_probe_too_short_for_the_minimum_duration_is_inconclusive_never_a_pass(
    run_capacity: Runner, fake: Any
) -> None:
    keys = "high = 2\ntpot_ms_p90_max = 50.0\n[evidence]\nmin_duration_s = 30.0\nmin_samples = 1\ntail_samples = 0"
    result = run_capacity(fake(ttft_ms=5, itl_ms=2), keys)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*lasted * s < ?evidence? min_duration_s 30 s (inconclusive: raise num_prompts)*"])


def test_capacity_entry_without_a_limit_is_a_usage_error_naming_the_keys(tmp_path: Path) -> None:
    (tmp_path / "x.toml").write_text(
        'schema_version = 1\n[hardware]\nname = "x"\naccelerator = "x"\ndevices = 1\nmemory_gib_per_device = 1\n'
        "[deployment]\nmax_model_len = 64\nmax_input_len = 32\n"
        '[throughput.cap]\nmethod = "capacity"\ninput_len = 8\noutput_len = 8\nnum_prompts = 8\n'
    )
    with pytest.raises(ThresholdsError, match=r"x.toml: key 'throughput.cap': a capacity entry needs at least one "
                       r"limit for its probes: ttft_ms_p99_max, tpot_ms_p99_max"):
        load("x", tmp_path)
