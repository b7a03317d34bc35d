"""Hardware profiles: every shipped profile loads, and a malformed file is a one-line error naming file and key."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest

from pytest_dsbench import metrics, thresholds
from pytest_dsbench.errors import ThresholdsError
from pytest_dsbench.methods import METHODS

SHIPPED = thresholds.available(thresholds.default_dir())

MINIMAL = """
schema_version = 1
[hardware]
name = "x"
accelerator = "gpu"
devices = 8
memory_gib_per_device = 80
[deployment]
tensor_parallel = 8
max_model_len = 4096
max_input_len = 3072
"""


def _write(tmp_path: Path, text: str, name: str = "x") -> Path:
    (tmp_path / f"{name}.toml").write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_is_valid(name: str) -> None:
    profile = thresholds.load(name)
    assert profile.hardware.name == name
    assert profile.slo.tpot_ms_mean_max == 50.0


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_profile_limits_the_p99_ttft(name: str) -> None:
    # A latency regression fails the gate without a stored baseline (issue 13: a 1.5 s slower first token passed).
    assert thresholds.load(name).slo.ttft_ms_p99_max is not None


def test_the_required_profiles_are_shipped() -> None:
    assert {"cpu", "va16", "h20", "h800", "h100", "h200", "rtx4090"} <= set(SHIPPED)


def test_va16_carries_seed_004_limits() -> None:
    tp32 = thresholds.load("va16/tp32").deployment
    pp2 = thresholds.load("va16/tp32-pp2").deployment
    assert (tp32.tensor_parallel, tp32.max_input_len, tp32.max_model_len, tp32.max_concurrency) == (32, 57344, 65536, 4)
    pp2_limits = (pp2.pipeline_parallel, pp2.max_input_len, pp2.max_model_len, pp2.mtp_supported)
    assert pp2_limits == (2, 102400, 131072, False)
    assert tp32.mtp_supported


def test_minimal_profile_gets_defaults(tmp_path: Path) -> None:
    profile = thresholds.load("x", _write(tmp_path, MINIMAL))
    assert profile.slo.tpot_ms_mean_max == 50.0
    assert profile.path == tmp_path / "x.toml"


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    directory = _write(tmp_path, MINIMAL + "\n[slo]\ntpot_ms_mean_maxx = 40\n")
    with pytest.raises(ThresholdsError, match=r"x\.toml: key 'slo\.tpot_ms_mean_maxx': unknown key"):
        thresholds.load("x", directory)


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    directory = _write(tmp_path, MINIMAL.replace("devices = 8", 'devices = "eight"'))
    with pytest.raises(ThresholdsError, match=r"key 'hardware\.devices'.*got 'eight'"):
        thresholds.load("x", directory)


def test_invalid_choice_lists_valid_values(tmp_path: Path) -> None:
    text = MINIMAL + '\n[throughput.t]\nmethod = "fastest"\ninput_len = 1\noutput_len = 1\nnum_prompts = 1\n'
    with pytest.raises(ThresholdsError, match=r"key 'throughput\.t\.method'.*'deeplink'.*'tencent'.*got 'fastest'"):
        thresholds.load("x", _write(tmp_path, text))


def test_missing_required_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ThresholdsError, match=r"key 'deployment\.max_model_len': required key is missing"):
        thresholds.load("x", _write(tmp_path, MINIMAL.replace("max_model_len = 4096\n", "")))


def test_input_limit_above_context_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ThresholdsError, match=r"max_input_len \(8192\) exceeds max_model_len \(4096\)"):
        thresholds.load("x", _write(tmp_path, MINIMAL.replace("max_input_len = 3072", "max_input_len = 8192")))


def test_mtp_on_a_deployment_without_mtp_is_rejected(tmp_path: Path) -> None:
    text = MINIMAL + "mtp = true\nmtp_supported = false\n"
    with pytest.raises(ThresholdsError, match="does not support MTP"):
        thresholds.load("x", _write(tmp_path, text))


def test_broken_toml_is_reported_with_the_file(tmp_path: Path) -> None:
    with pytest.raises(ThresholdsError, match=r"x\.toml: not valid TOML"):
        thresholds.load("x", _write(tmp_path, "schema_version = = 1"))


def test_malformed_profile_is_a_usage_error_for_pytest(pytester: pytest.Pytester, tmp_path: Path) -> None:
    directory = _write(tmp_path, MINIMAL + "\n[slo]\ntpot_ms_mean_max = -1\n", name="bad")
    result = pytester.runpytest("--hw", "bad", "--dsbench-thresholds", str(directory))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *bad.toml: key 'slo.tpot_ms_mean_max': Input should be greater than 0*"])
    assert "Traceback" not in result.stderr.str()


def test_accuracy_floor_per_engine_override(tmp_path: Path) -> None:
    text = MINIMAL + "\n[accuracy.gsm8k]\nfloor = 0.9\nengines = { sglang = 0.85 }\n"
    profile = thresholds.load("x", _write(tmp_path, text))
    assert profile.accuracy_floor("gsm8k", "sglang") == 0.85
    assert profile.accuracy_floor("gsm8k", "vllm") == 0.9


def test_a_throughput_entry_chooses_its_data_set_and_burstiness(tmp_path: Path) -> None:
    text = MINIMAL + ('[throughput.bursty]\nmethod = "random"\ninput_len = 8\noutput_len = 8\nnum_prompts = 4\n'
                      'dataset = "random-ids"\nburstiness = 0.5\nrequest_rate = 4.0\n')
    workload = thresholds.load("x", _write(tmp_path, text)).throughput["bursty"]
    assert (workload.dataset, workload.burstiness) == ("random-ids", 0.5)


def test_an_unknown_data_set_names_the_valid_ones(tmp_path: Path) -> None:
    text = MINIMAL + '[throughput.t]\nmethod = "random"\ninput_len = 8\noutput_len = 8\nnum_prompts = 4\n'
    with pytest.raises(ThresholdsError, match=r"dataset.*'random', 'random-ids', 'sharegpt' or 'fixed'"):
        thresholds.load("x", _write(tmp_path, text + 'dataset = "c4"\n'))


ENTRY = '\n[throughput.t]\nmethod = "{method}"\noutput_len = 1\nnum_prompts = 4\n'


def test_each_method_validates_its_entries_with_a_model_of_its_own(tmp_path: Path) -> None:
    text = MINIMAL + ENTRY.format(method="ali_prefill") + "input_lens = [128, 256]\ninput_tok_s_per_device_min = 9.0\n"
    entry = thresholds.load("x", _write(tmp_path, text)).throughput["t"]
    assert isinstance(entry, METHODS["ali_prefill"].config)
    assert entry.input_lens == [128, 256] and entry.input_tok_s_per_device_min == 9.0
    for name, method in METHODS.items():
        assert method.config.model_fields["method"].annotation == Literal[name]  # type: ignore[valid-type]


def test_batch_sizes_in_an_ali_prefill_entry_says_to_use_input_lens(tmp_path: Path) -> None:
    text = MINIMAL + ENTRY.format(method="ali_prefill") + "batch_sizes = [128, 256]\n"
    with pytest.raises(ThresholdsError) as caught:
        thresholds.load("x", _write(tmp_path, text))
    message = str(caught.value)
    assert "x.toml: key 'throughput.t.batch_sizes': not a key of an ali_prefill entry: use input_lens" in message
    assert "valid keys: method, output_len, num_prompts" in message and "input_tok_s_per_device_min" in message


def test_a_key_of_another_method_names_the_valid_keys_of_this_one(tmp_path: Path) -> None:
    text = MINIMAL + ENTRY.format(method="tencent") + 'input_len = 8\ndataset = "random-ids"\n'
    with pytest.raises(ThresholdsError, match=r"key 'throughput\.t\.dataset': unknown key; valid keys of a tencent "
                       r"entry: method, .*search_max_probes"):
        thresholds.load("x", _write(tmp_path, text))


def test_a_limit_key_naming_no_declared_metric_lists_the_valid_limit_keys(tmp_path: Path) -> None:
    with pytest.raises(ThresholdsError, match=r"key 'slo\.tpot_ms_meen_max': limit key names no declared metric "
                       r"'tpot_ms_meen' \(did you mean tpot_ms_mean\?\); valid limit keys of \[slo\]: "
                       r"tpot_ms_mean_max, tpot_ms_p99_max, "):
        thresholds.load("x", _write(tmp_path, MINIMAL + "[slo]\ntpot_ms_meen_max = 40\n"))


def test_a_limit_in_the_wrong_direction_names_the_right_key(tmp_path: Path) -> None:
    text = MINIMAL + ENTRY.format(method="random") + "input_len = 8\noutput_tok_s_max = 100\n"
    with pytest.raises(ThresholdsError, match=r"output_tok_s is higher is better, so its limit is output_tok_s_min; "
                       r"valid limit keys of a random entry: output_tok_s_min, total_tok_s_min, qpm_min"):
        thresholds.load("x", _write(tmp_path, text))


def test_a_limit_the_table_does_not_take_is_named(tmp_path: Path) -> None:
    with pytest.raises(ThresholdsError, match=r"\[slo\] sets no limit on ttft_ms_mean; valid limit keys"):
        thresholds.load("x", _write(tmp_path, MINIMAL + "[slo]\nttft_ms_mean_max = 40\n"))


def test_every_limit_key_of_the_schema_is_a_declared_metrics_limit() -> None:
    for table in [thresholds.Slo, *(method.config for method in METHODS.values())]:
        for key in thresholds.limit_keys(table):
            assert metrics.get(key[:-4]).limit_key == key, f"{table.__name__}.{key}"
    assert thresholds.limit_keys(METHODS["ali_decode"].config) == []  # ali decode records, it sets no limit


def test_an_entry_without_a_method_names_the_methods(tmp_path: Path) -> None:
    text = MINIMAL + "\n[throughput.t]\ninput_len = 1\noutput_len = 1\nnum_prompts = 1\n"
    with pytest.raises(ThresholdsError, match=r"key 'throughput\.t\.method': required key is missing; valid values: "
                       r"'deeplink', 'tencent', 'ali_decode', 'ali_prefill', 'random'"):
        thresholds.load("x", _write(tmp_path, text))


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_slo_workload_has_the_requests_its_percentile_limits_need(name: str) -> None:
    # a p99 limit on a run of 16 requests is INVALID by [evidence] (the p99 would be the maximum), so a shipped
    # profile whose SLO workload is too small could never pass its own SLO tests
    from pytest_dsbench.evidence import samples_needed
    from pytest_dsbench.load.api import slo_workload

    profile = thresholds.load(name)
    chosen = slo_workload(profile)
    if chosen is None:
        pytest.skip(f"{name} has no one-run workload: its SLO tests skip")
    workload_name, workload = chosen
    for key in thresholds.limit_keys(type(profile.slo)):
        if getattr(profile.slo, key) is None:
            continue
        declared = metrics.get(key.rsplit("_", 1)[0])
        if isinstance(declared, metrics.LatencyMetric):
            need = samples_needed(declared.stat, profile.evidence.min_samples, profile.evidence.tail_samples)
            assert workload.num_prompts >= need, (
                f"{name}.toml [slo] {key} needs {need} requests; [throughput.{workload_name}] sends "
                f"{workload.num_prompts}"
            )
