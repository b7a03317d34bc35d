"""The registry is the only list of engines: every place that names an engine rejects a name it lacks, and each
engine's package holds everything about that engine."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pytest_dsbench import options, thresholds
from pytest_dsbench.conformance.catalog import check
from pytest_dsbench.engines.adapters import adapter_class, all_adapters, get_adapter
from pytest_dsbench.engines.registry import ENGINE_NAMES
from pytest_dsbench.engines.vllm.behaviour import BEHAVIOUR as VLLM_BEHAVIOUR
from pytest_dsbench.eplb.launch import eplb_launch_settings
from pytest_dsbench.errors import DsbenchUsageError, ThresholdsError
from pytest_dsbench.methods.logparse import parse_line

REPO = Path(__file__).resolve().parents[2]
ENGINE_SIDE_FORBIDDEN = ("pytest", "_pytest", "pluggy", "pydantic", "httpx", "numpy", "packaging", "vllm", "sglang",
                         "lmdeploy", "torch")
"""What the hooks that run inside engine processes must not import when they load (torch only once used)."""


def test_each_engine_is_a_package_with_adapter_behaviour_log_format_and_eplb_hook() -> None:
    for name in ENGINE_NAMES:
        for module in ("adapter", "behaviour", "logformat", "eplb"):
            importlib.import_module(f"pytest_dsbench.engines.{name}.{module}")
        assert adapter_class(name).name == name
    assert list(all_adapters()) == list(ENGINE_NAMES)


def test_engine_option_choices_are_the_registry() -> None:
    spec = next(s for s in options.SPECS if s.flag == "--engine")
    assert spec.choices == ENGINE_NAMES


def test_an_unknown_engine_in_a_thresholds_file_names_the_file_key_and_valid_engines(tmp_path: Path) -> None:
    text = (thresholds.default_dir() / "cpu.toml").read_text().replace("[engines.vllm]", "[engines.tgi]")
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(ThresholdsError) as error:
        thresholds.load("bad", tmp_path)
    assert str(error.value) == (f"{tmp_path / 'bad.toml'}: key 'engines.tgi.[key]': unknown engine; valid values: "
                                "lmdeploy, sglang, vllm (got 'tgi')")


def test_a_conformance_check_cannot_declare_a_deviation_of_an_unknown_engine() -> None:
    with pytest.raises(ValueError, match=r"'Z99.example': deviations name unknown engine\(s\) tgi; valid engines: "
                                         "lmdeploy, sglang, vllm"):
        check("Z99.example", "example", severity="MUST", faults=(), source="none", deviations={"tgi": "x"})


def test_a_behaviour_cannot_read_the_log_format_of_an_unknown_engine() -> None:
    with pytest.raises(ValueError, match="decode_log_format 'tgi' is not a registered engine"):
        dataclasses.replace(VLLM_BEHAVIOUR, decode_log_format="tgi")


def test_an_unknown_log_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown decode log format 'tgi'; valid values: auto, lmdeploy, sglang"):
        parse_line("Decode batch, #running-req: 1, gen throughput (token/s): 2.0", "tgi")


def test_eplb_launch_settings_reject_an_unknown_engine(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown engine 'tgi'; expected one of vllm, sglang, lmdeploy"):
        eplb_launch_settings("tgi", "reference", None, tmp_path / "c.json")


def test_get_adapter_names_the_valid_engines() -> None:
    with pytest.raises(DsbenchUsageError, match=r"unknown engine 'tgi'\. Valid engines: lmdeploy, sglang, vllm\."):
        get_adapter("tgi")


@pytest.mark.parametrize("engine", ENGINE_NAMES)
def test_the_engine_side_hook_imports_no_third_party_module(engine: str) -> None:
    """vLLM/SGLang load the plugin, LMDeploy's sitecustomize the patch, in every engine process: importing it must
    not drag pytest, pydantic or the engine itself in (torch is imported when the patch installs)."""
    code = (f"import json, sys; import pytest_dsbench.engines.{engine}.eplb; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                            cwd=REPO)
    loaded = set(json.loads(result.stdout))
    assert loaded.isdisjoint(ENGINE_SIDE_FORBIDDEN), sorted(loaded & set(ENGINE_SIDE_FORBIDDEN))


def _declared_entry_points() -> dict[str, dict[str, str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {group: dict(eps) for group, eps in project["entry-points"].items()}


@pytest.mark.parametrize("group", ["vllm.general_plugins", "sglang.srt.plugins"])
def test_the_declared_engine_plugin_entry_points_load_the_engines_register(group: str) -> None:
    value = _declared_entry_points()[group]["dsbench_eplb"]
    engine = group.split(".")[0]
    assert value == f"pytest_dsbench.engines.{engine}.eplb:register"
    assert callable(importlib.metadata.EntryPoint(name="dsbench_eplb", value=value, group=group).load())


def test_the_installed_entry_points_are_the_declared_ones() -> None:
    """Engines read the installed metadata: a checkout whose pyproject moved a hook needs ``pip install -e .``."""
    try:
        dist = importlib.metadata.distribution("pytest-dsbench")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("pytest-dsbench is not installed")
    url = json.loads(dist.read_text("direct_url.json") or "{}").get("url", "")
    if url.startswith("file://") and Path(url.removeprefix("file://")).resolve() != REPO:
        pytest.skip(f"pytest-dsbench is installed from {url}, not from this checkout ({REPO})")
    declared = _declared_entry_points()
    for group in ("vllm.general_plugins", "sglang.srt.plugins"):
        installed = {ep.name: ep.value for ep in dist.entry_points if ep.group == group}
        assert installed == declared[group], f"stale install of {group}: rerun pip install -e ."


def test_an_only_engine_marker_naming_an_unknown_engine_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.only_engine("vlm")
        def test_x():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*only_engine names unknown engine(s) vlm; valid: lmdeploy, sglang, vllm*"])
