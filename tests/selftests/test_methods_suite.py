"""pytest_dsbench/suite/test_throughput.py end to end against fake engines, one workload per seed method: each
method passes a compliant fake, fails a violating one with expected vs actual, and writes its results in the
seed's format.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_dsbench.testing.fake_process import ServerProcess

Runner = Callable[..., pytest.RunResult]

PROFILE = """[deployment]
max_model_len = 4096
max_input_len = 2048
max_concurrency = 32
[slo]
tpot_ms_mean_max = 50.0
error_rate_max = 0.0
[throughput.deeplink]
method = "deeplink"
input_len = 64
output_len = 16
num_prompts = 8
output_tok_s_min = {deeplink_min}
[throughput.tencent]
method = "tencent"
input_len = 64
output_len = 8
num_prompts = {tencent_prompts}
request_rate = 50.0
max_concurrency = {max_concurrency}
total_tok_s_min = 10.0
qpm_min = 10.0
search_max_probes = 6
[throughput.ali_decode]
method = "ali_decode"
input_len = 32
output_len = 40
num_prompts = 4
batch_sizes = [1, 4]
[throughput.ali_prefill]
method = "ali_prefill"
output_len = 1
num_prompts = 4
input_lens = [128, 256]
input_tok_s_per_device_min = {prefill_min}
target_half_width_rel = 0.9
"""


@pytest.fixture
def run_methods(run_on_fake_hw: Runner) -> Runner:
    """Run the workload test against a server (which also serves as the engine log the ali decode method parses);
    ``extra`` is appended to the profile."""

    def run(
        server: ServerProcess,
        *args: str,
        max_concurrency: int = 8,
        deeplink_min: float = 1.0,
        prefill_min: float = 1.0,
        tencent_prompts: int = 8,
        extra: str = "",
    ) -> pytest.RunResult:
        profile = PROFILE.format(
            max_concurrency=max_concurrency,
            deeplink_min=deeplink_min,
            prefill_min=prefill_min,
            tencent_prompts=tencent_prompts,
        ) + extra  # keys of [throughput.ali_prefill] (the last table), then tables of its own
        return run_on_fake_hw(
            "test_throughput.py", server.base_url, profile, "--engine-log", str(server.log), *args, devices=2
        )

    return run


def methods_dir(pytester: pytest.Pytester) -> Path:
    return pytester.path / "artifacts" / "load" / "methods"


def test_compliant_engine_passes_every_method_and_writes_the_seed_formats(
    pytester: pytest.Pytester, run_methods: Runner, fake: Any
) -> None:
    result = run_methods(fake(ttft_ms=5, itl_ms=5, decode_log_interval_s=0.1), "-v")
    result.assert_outcomes(passed=4)  # one test per workload, its id the entry's name
    for name in ("deeplink", "tencent", "ali_decode", "ali_prefill"):
        result.stdout.fnmatch_lines([f"*test_workload_meets_its_limits?{name}? PASSED*"])
    out = methods_dir(pytester)
    log = (out / "deeplink" / "speed_in64_out16_n8.log").read_text()
    assert log.startswith("============ Serving Benchmark Result ============")
    decode = json.loads((out / "ali" / "ali_decode.json").read_text())
    assert list(decode[0]) == ["1", "4"] and decode[1]
    first = next(iter(decode[1].values()))
    assert set(first) == {"median", "throughput_per_gpu", "throughput_per_user", "gen_througput_samples"}
    assert first["throughput_per_gpu"] == pytest.approx(first["median"] / 2)  # the profile has 2 devices
    assert list(json.loads((out / "ali" / "ali_prefill.json").read_text())[0]) == ["128", "256"]
    prefill = json.loads((out / "ali" / "ali_prefill_evidence.json").read_text())["input_lens"]["128"]
    assert 3 <= prefill["repeats"] == len(prefill["repeat_tok_s_per_device"]) <= 10
    assert prefill["interval"]["method"] == "t" and prefill["requests"] == 4 * prefill["repeats"]
    decode_evidence = json.loads((out / "ali" / "ali_decode_evidence.json").read_text())
    assert decode_evidence["invalid"] == [] and decode_evidence["engine_log_lines"] > 0
    row = decode_evidence["batch_sizes"]["4"]
    assert row["interval_tok_s"]["low"] <= row["interval_tok_s"]["value"] <= row["interval_tok_s"]["high"]
    assert row["per_user_tok_s"] == pytest.approx(row["per_user_from_tpot_tok_s"], rel=0.25)  # the same thing
    assert row["engine_log"]["log_samples"] >= 1 and "vLLM's 'Avg generation throughput'" in row["engine_log"]["why"]
    final = json.loads((out / "tencent" / "tencent.json").read_text())[0]
    assert list(final) == [
        "tpot (ms)",
        "ttft (ms)",
        "input_throughput (tok/s)",
        "output_throughput (tok/s)",
        "total_throughput (tok/s)",
        "QPM (req/min)",
    ]
    assert (out / "tencent" / "tencent.log").read_text().splitlines()[-1].startswith("final_metrics: [{'tpot (ms)'")
    search = json.loads((out / "tencent" / "tencent-search.json").read_text())
    assert search["best"] == 8 and len(search["probes"]) == 1  # the top of the range passes: one probe


def test_ali_decode_needs_no_engine_log_its_figures_come_from_the_token_timeline(
    pytester: pytest.Pytester, run_methods: Runner, fake: Any
) -> None:
    result = run_methods(fake(itl_ms=2), "-k", "ali_decode")
    result.assert_outcomes(passed=1)
    out = methods_dir(pytester) / "ali"
    decode = json.loads((out / "ali_decode.json").read_text())
    assert {"1", "4"} <= set(decode[1]) and all(row["gen_througput_samples"] >= 1 for row in decode[1].values())
    evidence = json.loads((out / "ali_decode_evidence.json").read_text())
    assert evidence["engine_log_lines"] == 0 and evidence["batch_sizes"]["1"]["engine_log"]["log_tok_s"] is None


def test_deeplink_below_its_floor_fails_naming_value_and_floor(run_methods: Runner, fake: Any) -> None:
    result = run_methods(fake(itl_ms=2), "-k", "deeplink", deeplink_min=1e6)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*output_tok_s = * tok/s, limit >= 1e+06 tok/s (fake.toml *deeplink* output_tok_s_min); 8 samples*"]
    )


def test_prefill_below_its_floor_fails(run_methods: Runner, fake: Any) -> None:
    result = run_methods(fake(itl_ms=2), "-k", "prefill", prefill_min=1e7)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*input_tok_s_per_device = * tok/s, limit >= 1e+07 tok/s*"])


def test_tencent_on_a_slow_engine_fails_tpot_and_finds_no_concurrency(run_methods: Runner, fake: Any) -> None:
    result = run_methods(fake(itl_ms=70), "-k", "tencent", max_concurrency=4)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(  # the fixed run's TPOT and the search fail the workload's one test, both named
        [
            "*tpot_ms_mean = 7* ms, limit <= 50 ms (fake.toml ?throughput.tencent? / ?slo? tpot_ms_mean_max)*"
            "no concurrency in ?1, 4? keeps tpot_ms_mean <= 50 ms (the lowest concurrency fails; probes: c=4: 7*",
        ]
    )


def test_tencent_search_finds_where_tpot_crosses_the_limit(
    pytester: pytest.Pytester, run_methods: Runner, fake: Any
) -> None:
    server = fake(itl_ms=4, itl_ms_per_running=8)  # TPOT ~ 4 + 8 x requests running: crosses 50 ms near 6
    # two prompts keep the fixed run (all prompts at once) within the limit, so the test passes on the search
    result = run_methods(server, "-k", "tencent", max_concurrency=24, tencent_prompts=2)
    result.assert_outcomes(passed=1)
    search = json.loads((methods_dir(pytester) / "tencent" / "tencent-search.json").read_text())
    probes = search["probes"]
    assert [p["concurrency"] for p in probes][:2] == [24, 12] and not probes[0]["passed"]
    assert 4 <= search["best"] < 24, search
    assert all(p["passed"] == (p["concurrency"] <= search["best"]) for p in probes), probes  # a clean boundary
    assert all(p["samples"] >= 16 for p in probes) and search["stopped"] in ("converged", "max_probes (6)")


def test_starved_client_errors_the_method_tests_as_invalid_never_judges_them(
    run_methods: Runner, fake: Any, starve_client: tuple[str, ...]
) -> None:
    # A first token after 500 ms: every run outlasts the half second over which a loop's few wake-ups are judged
    result = run_methods(fake(ttft_ms=500, itl_ms=10), "-k", "deeplink or tencent", *starve_client)
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) == 0 and outcomes.get("failed", 0) == 0, outcomes
    assert outcomes.get("errors", 0) == 2, outcomes
    result.stdout.fnmatch_lines(["*INVALID run, the load generator was the bottleneck: *"])


def test_a_run_shorter_than_the_minimum_duration_is_invalid_naming_the_fix(run_methods: Runner, fake: Any) -> None:
    result = run_methods(fake(itl_ms=2), "-k", "deeplink", extra="[evidence]\nmin_duration_s = 30.0\n")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*INVALID run deeplink-deeplink (fake.toml ?throughput.deeplink?): it lasted * s < ?evidence? "
         "min_duration_s 30 s; raise num_prompts of the entry (or lower the minimums in fake.toml ?evidence?)*"]
    )


def test_run_with_the_evidence_it_needs_stays_valid(run_methods: Runner, fake: Any) -> None:
    result = run_methods(fake(itl_ms=2), "-k", "deeplink", extra="[evidence]\nmin_duration_s = 0.01\nmin_samples = 8\n")
    result.assert_outcomes(passed=1)


def test_prefill_of_a_few_short_requests_is_invalid_after_its_repeats(
    pytester: pytest.Pytester, run_methods: Runner, fake: Any
) -> None:
    # the case: 4 requests a run, well under a second; default minimums, three repeats at most
    result = run_methods(fake(itl_ms=2), "-k", "prefill", extra="max_repeats = 3\n[evidence]\n")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*INVALID ali prefill run (fake.toml ?throughput.ali_prefill?): input_len 128: 3 repeat(s) of 4 "
         "requests, it lasted * s < ?evidence? min_duration_s 1 s*raise num_prompts, max_repeats or repeat_budget_s*"]
    )
    evidence = json.loads((methods_dir(pytester) / "ali" / "ali_prefill_evidence.json").read_text())
    assert evidence["input_lens"]["128"]["repeats"] == 3 and evidence["invalid"]


def test_ali_decode_shorter_than_the_minimum_at_a_probed_size_is_invalid(run_methods: Runner, fake: Any) -> None:
    result = run_methods(fake(itl_ms=2), "-k", "ali_decode", extra="[evidence]\nmin_duration_s = 5.0\n")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        ["*INVALID ali decode run (fake.toml ?throughput.ali_decode?): batch size 1: it lasted * s < ?evidence? "
         "min_duration_s 5 s*raise num_prompts*"]
    )
