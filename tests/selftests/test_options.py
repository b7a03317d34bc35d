"""Option validation: every bad value is a one-line usage error that names the valid values."""

from __future__ import annotations

import pytest


def test_unknown_engine_names_the_valid_engines(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--engine", "tgi")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid choice: 'tgi'*vllm*sglang*lmdeploy*"])


def test_unknown_engine_from_environment_is_rejected(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSBENCH_ENGINE", "tgi")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: unknown engine 'tgi'. Valid values: vllm, sglang, lmdeploy."])


def test_unknown_hw_names_the_valid_profiles(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--hw", "nosuch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: unknown hw profile 'nosuch'*Valid profiles: cpu, gpu1, h100, h20, h200, h800, "
                                 "rtx4090, va16.*"])


def test_unknown_deployment_names_the_valid_deployments(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--hw", "va16/tp64")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*va16.toml: no deployment 'tp64'*Valid deployments: tp32, tp32-mtp, tp32-pp2.*"])


def test_unknown_load_executor_names_the_valid_ones(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--load-executor", "dask")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*invalid choice: 'dask'*thread*process*ray*"])


def test_unknown_load_executor_from_ini_names_the_valid_ones(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ndsbench_load_executor = dask\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: unknown load-executor 'dask'. Valid values: thread, process, ray."])


def test_load_executor_and_ray_address_come_from_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSBENCH_LOAD_EXECUTOR", "ray")
    monkeypatch.setenv("DSBENCH_RAY_ADDRESS", "10.0.0.5:6379")
    pytester.makepyfile(
        "def test_executor(dsbench_options):\n"
        "    assert (dsbench_options.load_executor, dsbench_options.ray_address) == ('ray', '10.0.0.5:6379')\n"
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_ray_address_without_the_ray_executor_says_what_to_add(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--ray-address", "auto")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --ray-address='auto' is only used by the ray executor; add --load-executor*"])


def test_base_url_must_be_http(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--base-url", "localhost:8000")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --base-url='localhost:8000' is not an http(s) URL*"])


def test_engine_env_must_be_key_value(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--engine-env", "NOEQUALS")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --engine-env='NOEQUALS' is not K=V*"])


def test_timeouts_must_be_positive_numbers(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--request-timeout", "soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --request-timeout='soon' is not a number*"])


def test_regress_limit_must_be_metric_colon_percent(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--dsbench-regress", "tpot")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --dsbench-regress='tpot' is not METRIC:PCT*"])


def test_ini_values_are_used_when_no_option_is_given(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\ndsbench_hw = va16\n")
    pytester.makepyfile(
        "def test_hw(dsbench_options, hw_profile):\n"
        "    assert dsbench_options.hw == 'va16'\n"
        "    assert hw_profile.hardware.name == 'va16'\n"
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_command_line_beats_environment_beats_ini(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeini("[pytest]\ndsbench_hw = va16\n")
    monkeypatch.setenv("DSBENCH_HW", "h20")
    pytester.makepyfile("def test_hw(dsbench_options):\n    assert dsbench_options.hw == 'h800'\n")
    pytester.runpytest("--hw", "h800").assert_outcomes(passed=1)


def test_list_hw_prints_every_profile_and_exits_zero(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--dsbench-list-hw")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["hardware profiles in *", "  cpu *", "*va16/tp32-pp2*max-input-len 102400*"])


def test_help_documents_every_option_with_its_default(pytester: pytest.Pytester) -> None:
    from pytest_dsbench.options import SPECS

    result = pytester.runpytest("--help")
    text = " ".join(result.stdout.str().split())
    for spec in SPECS:
        assert spec.flag in text, spec.flag
    assert "Default: 'vllm'" in text


def test_report_header_names_engine_hw_and_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--hw", "va16")
    result.stdout.fnmatch_lines(["dsbench: engine=vllm hw=va16 (*va16.toml) mode=start (embedded tiny-r1)*"])


@pytest.mark.parametrize(("args", "expected"), [(["--dsbench-compare"], "latest"), ([], None)])
def test_compare_alone_means_the_latest_run(pytester: pytest.Pytester, args: list[str], expected: str | None) -> None:
    pytester.makepyfile(f"def test_compare(dsbench_options):\n    assert dsbench_options.compare == {expected!r}\n")
    pytester.runpytest(*args, "-p", "no:cacheprovider", "test_compare_alone_means_the_latest_run.py").assert_outcomes(
        passed=1
    )


def test_compare_with_a_run_that_is_not_stored_names_what_is(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--dsbench-compare", "0003")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: no stored run '0003': *holds no stored runs. Give a number, a run id, "
                                 "'latest' or a path to a run file."])
