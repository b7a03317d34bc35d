"""The engine's /metrics during a load run: summary figures, the cold-cache validity rule, the sampler, salting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_dsbench import promtext
from pytest_dsbench.engines.sglang.servermetrics import SERVER_METRICS as SGLANG
from pytest_dsbench.engines.vllm.servermetrics import SERVER_METRICS as VLLM
from pytest_dsbench.load import datasets
from pytest_dsbench.load.prefix_cache import cold_cache_problem, reset
from pytest_dsbench.load.server_metrics import ServerMetricsProbe, ServerMetricsReport, Snapshot, read_values
from pytest_dsbench.load.tokenizer import load_tokenizer
from pytest_dsbench.testing.fake_engine import FakeEngineThread

REAL_VLLM_PAGE = Path(__file__).parent / "data" / "vllm-0.32-cpu-mtp.metrics.txt"


def report(*points: dict[str, float], measured_from: int = 0) -> ServerMetricsReport:
    return ServerMetricsReport(
        available=True, series=[Snapshot(float(i), p) for i, p in enumerate(points)], measured_from=measured_from
    )


def test_counters_count_from_the_measured_start_not_from_before_the_warmup() -> None:
    run = report({"preemptions": 5.0}, {"preemptions": 7.0}, {"preemptions": 9.0}, measured_from=1)
    assert run.summary()["preemptions"] == 2.0


def test_mtp_acceptance_rate_and_length_from_a_real_vllm_page() -> None:
    """Counters at zero before, and the real page after: 1 of 46 draft tokens accepted, 46 drafts."""
    after = read_values(promtext.parse(REAL_VLLM_PAGE.read_text()), VLLM)
    before = {name: 0.0 for name in after}
    summary = report(before, after).summary()
    assert summary["spec_decode_acceptance_rate"] == pytest.approx(1 / 46)
    assert summary["spec_decode_acceptance_length"] == pytest.approx(1 + 1 / 46)


def test_sglang_acceptance_comes_from_its_gauges() -> None:
    text = "sglang:spec_accept_length{model_name=\"m\"} 2.5\nsglang:spec_accept_rate{model_name=\"m\"} 0.75\n"
    values = read_values(promtext.parse(text), SGLANG)
    summary = report(values, values).summary()
    assert summary["spec_decode_acceptance_length"] == 2.5 and summary["spec_decode_acceptance_rate"] == 0.75


def test_gauge_peaks_are_the_highest_scrape_in_the_run() -> None:
    run = report({"kv_cache_usage": 0.1, "requests_waiting": 0}, {"kv_cache_usage": 0.9, "requests_waiting": 3},
                 {"kv_cache_usage": 0.2, "requests_waiting": 1})
    assert run.summary()["kv_cache_usage_peak"] == 0.9 and run.summary()["requests_waiting_peak"] == 3
    assert run.samples("kv_cache_usage_peak") == [0.1, 0.9, 0.2]


def test_a_cold_run_that_hit_the_cache_is_invalid_with_the_fraction_and_the_fix() -> None:
    run = report({"prefix_cache_hits": 0, "prefix_cache_queries": 0},
                 {"prefix_cache_hits": 500, "prefix_cache_queries": 1000})
    run.cache_control = "salted"
    problem = cold_cache_problem(run)
    assert problem is not None
    assert "50.0% of their tokens (500 of 1000 queried prompt tokens)" in problem
    assert "more than the 1% a cold run allows" in problem and 'prefix_cache = "warm"' in problem


def test_a_cold_run_without_hits_or_without_counters_stays_valid() -> None:
    clean = report({"prefix_cache_hits": 0, "prefix_cache_queries": 0},
                   {"prefix_cache_hits": 0, "prefix_cache_queries": 1000})
    assert cold_cache_problem(clean) is None
    assert cold_cache_problem(report({"preemptions": 0}, {"preemptions": 0})) is None


def test_an_engine_without_metrics_gives_a_note_not_an_error() -> None:
    from pytest_dsbench.testing.fake_engine import FakeConfig

    with FakeEngineThread(FakeConfig(metrics_enabled=False)) as server:
        probe = ServerMetricsProbe(server.base_url, VLLM, interval_s=0.05).start()
        result = probe.finish()
    assert not result.available and result.summary() == {}
    assert "no server metrics (GET " in result.note and "HTTP 404" in result.note


def test_the_sampler_scrapes_through_the_run(make_fake_engine: Callable[..., FakeEngineThread]) -> None:
    import time

    server = make_fake_engine(preemptions_per_request=1)
    probe = ServerMetricsProbe(server.base_url, VLLM, interval_s=0.05).start()
    probe.mark_measured_start()
    time.sleep(0.3)
    result = probe.finish()
    assert result.available and len(result.window) >= 4
    assert result.summary()["preemptions"] == 0.0 and result.failed_scrapes == 0


def test_reset_reports_an_endpoint_the_server_lacks(make_fake_engine: Callable[..., FakeEngineThread]) -> None:
    assert reset(make_fake_engine().base_url, "/reset_prefix_cache") == (True, "POST /reset_prefix_cache")
    done, why = reset(make_fake_engine(prefix_cache_reset=False).base_url, "/reset_prefix_cache")
    assert not done and "HTTP 404" in why


def test_salted_prompts_keep_their_lengths_and_differ_by_salt() -> None:
    tok = load_tokenizer("chars")
    prompts = datasets.build(datasets.DatasetSpec(num_prompts=4, input_len=64, output_len=8, range_ratio=1.0), tok)
    one, two = datasets.salted(prompts, tok, 1), datasets.salted(prompts, tok, 2)
    assert [p.prompt_len for p in one] == [p.prompt_len for p in prompts]
    assert all(a.text[: datasets.SALT_TOKENS] != b.text[: datasets.SALT_TOKENS] for a, b in zip(one, two, strict=True))
    assert datasets.salted(prompts, tok, 1) == one
    head = datasets.SALT_TOKENS
    assert all(a.text[head:] == p.text[head:] for a, p in zip(one, prompts, strict=True))


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("kv_cache_usage_peak_max", "2.0", "Input should be less than or equal to 1"),
        ("preemptions_max", "-1", "Input should be greater than or equal to 0"),
        ("spec_decode_acceptance_rate_max", "0.5", "its limit is spec_decode_acceptance_rate_min"),
    ],
)
def test_server_metric_limits_are_validated_naming_file_and_key(
    tmp_path: Path, key: str, value: str, problem: str
) -> None:
    from pytest_dsbench.errors import ThresholdsError
    from pytest_dsbench.thresholds import load

    (tmp_path / "x.toml").write_text(
        'schema_version = 1\n[hardware]\nname = "x"\naccelerator = "x"\ndevices = 1\nmemory_gib_per_device = 1\n'
        f"[deployment]\nmax_model_len = 64\nmax_input_len = 32\n[slo]\n{key} = {value}\n"
    )
    with pytest.raises(ThresholdsError) as info:
        load("x", tmp_path)
    assert f"key 'slo.{key}'" in str(info.value) and problem in str(info.value)
