"""Server metrics and prefix-cache control end to end: tests/conformance/test_slo.py against fake engines.

The fake keeps a prefix cache and vLLM-named counters (pytest_dsbench.testing.fake_metrics). A cold workload
stays valid run after run when the cache is reset or the prompts salted, and is INVALID when its prompts were
served from the cache; each ``[slo]`` limit on a server metric fails against a fake that violates it; an engine
without /metrics gets a note, not a failure.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from pytest_dsbench.testing.fake_process import ServerProcess

Runner = Callable[..., pytest.RunResult]

PROFILE = """[deployment]
max_model_len = 4096
max_input_len = 2048
max_concurrency = 8
{deployment}
[slo]
tpot_ms_mean_max = 500.0
error_rate_max = 0.0
{slo}
[throughput.tencent]
method = "tencent"
input_len = 64
output_len = {output_len}
num_prompts = 8
request_rate = 50.0
max_concurrency = 8
{workload}
"""


@pytest.fixture
def run_slo(run_on_fake_hw: Runner) -> Runner:
    def run(
        server: ServerProcess, *args: str, slo: str = "", workload: str = "", output_len: int = 16, deployment: str = ""
    ) -> Any:
        profile = PROFILE.format(slo=slo, workload=workload, output_len=output_len, deployment=deployment)
        return run_on_fake_hw("test_slo.py", server.base_url, profile, "-k", "server_metrics or tpot_ms_mean", *args)

    return run


def server_report(pytester: pytest.Pytester) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((pytester.path / "artifacts" / "load" / "slo-tencent.server-metrics.json")
                                      .read_text())
    return data


def test_a_cold_workload_stays_valid_run_after_run_when_the_cache_is_reset(
    pytester: pytest.Pytester, run_slo: Runner, fake: Any
) -> None:
    server = fake(itl_ms=2, prefix_cache=True)
    for _ in range(2):
        run_slo(server).assert_outcomes(passed=2)
        report = server_report(pytester)
        assert report["cache_control"] == "reset" and report["summary"]["prefix_cache_hit_fraction"] == 0.0
    html = (pytester.path / "artifacts" / "dsbench-report.html").read_text()
    assert "Server metrics (engine /metrics during each load run)" in html and "cache control: reset" in html
    stored = [json.loads(p.read_text()) for p in (pytester.path / ".benchmarks").rglob("*.json")]
    kept = [b["extra_info"]["dsbench"]["server_metrics"] for doc in stored for b in doc["benchmarks"]
            if "server_metrics" in b["extra_info"]["dsbench"]]
    assert len(stored) == 2 and kept and kept[0]["cache_control"] == "reset" and kept[0]["series"]


def test_without_a_reset_endpoint_a_cold_workload_salts_its_prompts(
    pytester: pytest.Pytester, run_slo: Runner, fake: Any
) -> None:
    server = fake(itl_ms=2, prefix_cache=True, prefix_cache_reset=False)
    for _ in range(2):
        run_slo(server).assert_outcomes(passed=2)
        report = server_report(pytester)
        assert report["cache_control"] == "salted" and report["summary"]["prefix_cache_hit_fraction"] == 0.0
    assert "prompts salted" in report["note"]


def test_a_cold_run_whose_prompts_the_cache_served_is_invalid(run_slo: Runner, fake: Any) -> None:
    server = fake(itl_ms=2, prefix_cache=True, prefix_cache_reset_ignored=True)
    run_slo(server).assert_outcomes(passed=2)
    second = run_slo(server)
    outcomes = second.parseoutcomes()
    assert outcomes.get("passed", 0) == 0 and outcomes.get("errors", 0) == 2, outcomes
    second.stdout.fnmatch_lines(["*INVALID run, prefix cache: the cold workload's prompts hit the engine's prefix "
                                 "cache for *% of their tokens*"])


def test_a_warm_workload_may_be_served_from_the_cache(pytester: pytest.Pytester, run_slo: Runner, fake: Any) -> None:
    server = fake(itl_ms=2, prefix_cache=True, prefix_cache_reset_ignored=True)
    for _ in range(2):
        run_slo(server, workload='prefix_cache = "warm"').assert_outcomes(passed=2)
    report = server_report(pytester)
    assert report["cache_control"] == "warm" and report["summary"]["prefix_cache_hit_fraction"] > 0.5


def test_preemptions_over_the_slo_limit_fail(run_slo: Runner, fake: Any) -> None:
    result = run_slo(fake(itl_ms=2, preemptions_per_request=1), slo="preemptions_max = 0")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*preemptions = 8 req, limit <= 0 req (engine /metrics; fake.toml *preemptions_max)*"])


def test_no_preemptions_meet_a_zero_limit(run_slo: Runner, fake: Any) -> None:
    run_slo(fake(itl_ms=2), slo="preemptions_max = 0").assert_outcomes(passed=2)


@pytest.mark.parametrize(("accepted", "outcome"), [(0, "failed"), (2, "passed")])
def test_spec_decode_acceptance_is_held_to_its_floor(run_slo: Runner, fake: Any, accepted: int, outcome: str) -> None:
    slo = "spec_decode_acceptance_rate_min = 0.5\nspec_decode_acceptance_length_min = 2.0"
    result = run_slo(fake(itl_ms=2, spec_tokens=2, spec_accepted=accepted), slo=slo)
    result.assert_outcomes(passed=2 if outcome == "passed" else 1, **({outcome: 1} if outcome == "failed" else {}))
    if outcome == "failed":
        result.stdout.fnmatch_lines(["*spec_decode_acceptance_rate = 0 fraction, limit >= 0.5 fraction*; "
                                     "spec_decode_acceptance_length = 1 tok, limit >= 2 tok*"])


def test_kv_cache_usage_over_its_limit_fails(run_slo: Runner, fake: Any) -> None:
    """A run long enough for the sampler to scrape while all 8 requests run (usage 0.5 per running request)."""
    server = fake(itl_ms=100, kv_cache_usage_per_running=0.5)
    result = run_slo(server, slo="kv_cache_usage_peak_max = 0.3", output_len=16)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*kv_cache_usage_peak = 1 fraction, limit <= 0.3 fraction*"])


def test_an_engine_without_metrics_gets_a_note_not_a_failure(run_slo: Runner, fake: Any) -> None:
    result = run_slo(fake(itl_ms=2, metrics_enabled=False), slo="preemptions_max = 0")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*no server metrics: no server metrics (GET *HTTP 404*"])


@pytest.mark.parametrize(("spec_tokens", "outcome"), [(0, "failed"), (1, "passed")])
def test_an_mtp_deployment_must_show_speculative_decoding(
    run_slo: Runner, fake: Any, spec_tokens: int, outcome: str
) -> None:
    result = run_slo(fake(itl_ms=2, spec_tokens=spec_tokens, spec_accepted=1), deployment="mtp = true")
    result.assert_outcomes(passed=2 if outcome == "passed" else 1, **({outcome: 1} if outcome == "failed" else {}))
    if outcome == "failed":
        result.stdout.fnmatch_lines(["*has mtp = true, but the engine's /metrics shows no speculative decoding*"])


def test_a_queue_longer_than_its_limit_fails(run_slo: Runner, fake: Any) -> None:
    """The fake reports one waiting request per running one; the sampler scrapes while all 8 run."""
    server = fake(itl_ms=100, waiting_per_running=1.0)
    result = run_slo(server, slo="requests_waiting_peak_max = 2", output_len=16)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*requests_waiting_peak = 8 req, limit <= 2 req*"])
