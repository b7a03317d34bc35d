"""Every command-line option, its ini twin and environment variable, and the one resolver for them.

Precedence: command line > environment variable > ini file > default. Values are validated when pytest
configures, so a typo is a one-line usage error (exit code 4), never a traceback.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import pytest

from pytest_dsbench.engines.registry import ENGINE_NAMES
from pytest_dsbench.errors import DsbenchUsageError

EPLB_MODES = ("off", "observe", "reference", "balanced")
LOAD_GENERATORS = ("dsbench", "sglang")
MODULES_SCALES = ("auto", "full", "ci")
"""``--dsbench-modules-scale``: DeepSeek-R1's real dimensions, scaled-down ones, or by the device (``auto``)."""

Kind = Literal["str", "float", "int", "list", "bool"]


@dataclass(frozen=True)
class OptionSpec:
    """One option: its flag, ini key, environment variable, type, default and help."""

    flag: str
    kind: Kind
    help: str
    default: Any = None
    env: str | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    bare: str | None = None
    """The value the flag takes when given without one (``--dsbench-compare`` alone means 'latest')."""

    @property
    def dest(self) -> str:
        return "dsbench_" + self.flag.lstrip("-").removeprefix("dsbench-").replace("-", "_")

    @property
    def ini(self) -> str:
        return self.dest


SPECS: tuple[OptionSpec, ...] = (
    OptionSpec("--engine", "str", "Serving engine under test.", "vllm", "DSBENCH_ENGINE", ENGINE_NAMES),
    OptionSpec("--hw", "str", "Hardware profile: a thresholds/<NAME>.toml file (NAME or NAME/DEPLOYMENT, "
               "e.g. va16/tp32-pp2). See --dsbench-list-hw.", "cpu", "DSBENCH_HW", metavar="NAME"),
    OptionSpec("--base-url", "str", "Attach to a running server at this URL instead of launching one.",
               None, "DSBENCH_BASE_URL", metavar="URL"),
    OptionSpec("--model", "str", "Model path or name to launch (start mode) or to expect (attach mode). "
               "Without it on a CPU-only machine the embedded tiny model is served.", None, "DSBENCH_MODEL",
               metavar="PATH"),
    OptionSpec("--served-model-name", "str", "Model name the API serves (default: from /v1/models).", None,
               "DSBENCH_SERVED_MODEL_NAME", metavar="NAME"),
    OptionSpec("--tokenizer", "str", "Local tokenizer folder for token accounting (never a model hub).", None,
               "DSBENCH_TOKENIZER", metavar="PATH"),
    OptionSpec("--engine-arg", "list", "Extra argument appended to the launch command (repeatable; "
               "use --engine-arg=--flag for values starting with '-').", [], metavar="ARG"),
    OptionSpec("--engine-env", "list", "Environment variable K=V for the launched engine (repeatable).", [],
               metavar="K=V"),
    OptionSpec("--engine-python", "str", "Python interpreter that runs the engine (e.g. a venv of its own). "
               "Default: the interpreter running pytest.", None, "DSBENCH_ENGINE_PYTHON", metavar="PATH"),
    OptionSpec("--engine-log", "str", "Attach mode: server log file(s) to parse, comma-separated (as seed "
               "003's --deploy_log).", None, "DSBENCH_ENGINE_LOG", metavar="PATH[,PATH]"),
    OptionSpec("--engine-host", "str", "Address a launched engine binds.", "127.0.0.1", "DSBENCH_ENGINE_HOST",
               metavar="ADDR"),
    OptionSpec("--api-key", "str", "API key sent as a Bearer token (never logged).", None, "DSBENCH_API_KEY",
               metavar="KEY"),
    OptionSpec("--engine-startup-timeout", "float", "Seconds to wait for a launched engine to become healthy.",
               900.0, "DSBENCH_ENGINE_STARTUP_TIMEOUT", metavar="S"),
    OptionSpec("--request-timeout", "float", "Seconds before any single HTTP request is abandoned.", 120.0,
               "DSBENCH_REQUEST_TIMEOUT", metavar="S"),
    OptionSpec("--eplb", "str", "Routing patch installed in a launched engine: off, observe (count the model's "
               "own routing, so throughput runs report per-rank and per-expert load), the seed's reference "
               "transform, or the balanced one.", "off", "DSBENCH_EPLB", EPLB_MODES),
    OptionSpec("--eplb-ranks", "int", "Expert-parallel rank count the routing patch simulates (default: the "
               "engine's EP size; the embedded engine simulates 4).", None, "DSBENCH_EPLB_RANKS", metavar="N"),
    OptionSpec("--load-generator", "str", "Client that produces load-test numbers: this suite's, or the "
               "official sglang.bench_serving.", "dsbench", "DSBENCH_LOAD_GENERATOR", LOAD_GENERATORS),
    OptionSpec("--load-workers", "int", "Client processes that share the load (this suite's client); "
               "raise it when a run is reported INVALID because the client was the bottleneck.", 1,
               "DSBENCH_LOAD_WORKERS", metavar="N"),
    OptionSpec("--dsbench-artifacts", "str", "Folder for engine logs, per-request records and reports.",
               "dsbench-artifacts", "DSBENCH_ARTIFACTS", metavar="DIR"),
    OptionSpec("--dsbench-thresholds", "str", "Folder of hardware profiles (default: the project's "
               "thresholds/).", None, "DSBENCH_THRESHOLDS", metavar="DIR"),
    OptionSpec("--dsbench-storage", "str", "Result history folder (pytest-benchmark storage; one subfolder per "
               "engine and hw).", ".benchmarks", "DSBENCH_STORAGE", metavar="DIR"),
    OptionSpec("--dsbench-compare", "str", "Compare results against a stored run: a run id or 'latest' (the "
               "flag alone).", None, "DSBENCH_COMPARE", metavar="RUN", bare="latest"),
    OptionSpec("--dsbench-regress", "list", "Regression limit METRIC:PCT (repeatable), e.g. "
               "tpot_ms_mean:5. Direction comes from the metric definition.", [], metavar="METRIC:PCT"),
    OptionSpec("--dsbench-force-compare", "bool", "Compare runs even when engine, hw, model or workload "
               "differ.", False),
    OptionSpec("--dsbench-datasets", "str", "Local folder of accuracy data sets (offline EvalScope).", None,
               "DSBENCH_DATASETS", metavar="DIR"),
    OptionSpec("--dsbench-eval-python", "str", "Python interpreter that has EvalScope installed (e.g. a venv of "
               "its own); accuracy runs execute there. Default: the interpreter running pytest.", None,
               "DSBENCH_EVAL_PYTHON", metavar="PATH"),
    OptionSpec("--dsbench-eval-timeout", "float", "Seconds one EvalScope accuracy run may take before it is "
               "stopped.", 7200.0, "DSBENCH_EVAL_TIMEOUT", metavar="S"),
    OptionSpec("--dsbench-no-accuracy-cache", "bool", "Always rerun EvalScope instead of reusing a stored "
               "accuracy result with the same engine, model, data set, limit and settings.", False),
    OptionSpec("--dsbench-modules-scale", "str", "Dimensions of the per-module benchmarks (tests/modules, marker "
               "modules): full = DeepSeek-R1's real config (a GPU), ci = scaled down for a CPU, auto = full when "
               "a CUDA device is present.", "auto", "DSBENCH_MODULES_SCALE", MODULES_SCALES),
    OptionSpec("--dsbench-list-hw", "bool", "List the hardware profiles and exit.", False),
)

_BY_DEST = {spec.dest: spec for spec in SPECS}


def add_options(parser: pytest.Parser) -> None:
    """Register the options in one group, each with an ini twin."""
    group = parser.getgroup("dsbench", "DeepSeek serving conformance and regression (pytest-dsbench)")
    for spec in SPECS:
        env_note = f" Env: {spec.env}." if spec.env else ""
        help_text = f"{spec.help}{env_note} Default: {spec.default!r}."
        if spec.kind == "bool":
            group.addoption(spec.flag, action="store_true", dest=spec.dest, default=None, help=help_text)
            parser.addini(spec.ini, help=spec.help, type="bool", default=spec.default)
        elif spec.kind == "list":
            group.addoption(spec.flag, action="append", dest=spec.dest, default=None, metavar=spec.metavar,
                            help=help_text)
            parser.addini(spec.ini, help=spec.help, type="args", default=[])
        else:
            bare: dict[str, Any] = {} if spec.bare is None else {"nargs": "?", "const": spec.bare}
            group.addoption(spec.flag, action="store", dest=spec.dest, default=None, metavar=spec.metavar,
                            choices=list(spec.choices) if spec.choices else None, help=help_text, **bare)
            parser.addini(spec.ini, help=spec.help, default=None)


def raw_value(config: pytest.Config, dest: str) -> Any:
    """The value of one option by precedence: command line > environment > ini > default."""
    spec = _BY_DEST[dest]
    cli = config.getoption(dest, default=None)
    if cli is not None:
        return cli
    if spec.env and os.environ.get(spec.env):
        return os.environ[spec.env]
    ini = config.getini(spec.ini)
    if ini not in (None, "", []):
        return ini
    return spec.default


def _as_float(spec: OptionSpec, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DsbenchUsageError(f"{spec.flag}={value!r} is not a number. Give seconds, e.g. {spec.flag}=60") from None
    if number <= 0:
        raise DsbenchUsageError(f"{spec.flag}={value!r} must be greater than 0.")
    return number


def _as_int(spec: OptionSpec, value: Any) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise DsbenchUsageError(f"{spec.flag}={value!r} is not an integer.") from None
    if number < 1:
        raise DsbenchUsageError(f"{spec.flag}={value!r} must be at least 1.")
    return number


def _check_choice(spec: OptionSpec, value: str) -> str:
    if spec.choices and value not in spec.choices:
        raise DsbenchUsageError(
            f"unknown {spec.flag.lstrip('-')} {value!r}. Valid values: {', '.join(spec.choices)}."
        )
    return value


def _check_url(value: str | None) -> str | None:
    if value is None:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise DsbenchUsageError(
            f"--base-url={value!r} is not an http(s) URL. Give the server root, e.g. http://127.0.0.1:8000"
        )
    path = parsed.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{parsed.scheme}://{parsed.netloc}{path}"


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DsbenchUsageError(f"--engine-env={pair!r} is not K=V. Example: --engine-env VLLM_CPU_KVCACHE_SPACE=2")
        env[key] = value
    return env


def _parse_regress(items: list[str]) -> dict[str, float]:
    limits: dict[str, float] = {}
    for item in items:
        metric, sep, pct = item.rpartition(":")
        try:
            value = float(pct.rstrip("%"))
        except ValueError:
            value = -1.0
        if not sep or not metric or value < 0:
            raise DsbenchUsageError(
                f"--dsbench-regress={item!r} is not METRIC:PCT. Example: --dsbench-regress tpot_ms_mean:5"
            )
        limits[metric] = value
    return limits


@dataclass(frozen=True)
class DsbenchOptions:
    """The resolved, validated options of one pytest run."""

    engine: str
    hw: str
    base_url: str | None
    model: str | None
    served_model_name: str | None
    tokenizer: str | None
    engine_args: tuple[str, ...]
    engine_env: dict[str, str]
    engine_python: str | None
    engine_logs: tuple[Path, ...]
    engine_host: str
    api_key: str | None
    engine_startup_timeout_s: float
    request_timeout_s: float
    eplb: str
    eplb_ranks: int | None
    load_generator: str
    artifacts_dir: Path
    thresholds_dir: Path | None
    storage_dir: Path
    compare: str | None
    regress_pct: dict[str, float] = field(default_factory=dict)
    force_compare: bool = False
    datasets_dir: Path | None = None
    list_hw: bool = False
    eval_python: str | None = None
    eval_timeout_s: float = 7200.0
    accuracy_cache: bool = True
    load_workers: int = 1
    modules_scale: str = "auto"

    @property
    def attach(self) -> bool:
        """True when the suite talks to a server it did not start."""
        return self.base_url is not None


def resolve(config: pytest.Config) -> DsbenchOptions:
    """Resolve and validate every option; raise :class:`DsbenchUsageError` with a one-line reason."""

    def get(name: str) -> Any:
        return raw_value(config, "dsbench_" + name)

    spec = _BY_DEST
    engine = _check_choice(spec["dsbench_engine"], str(get("engine")))
    logs = tuple(Path(p.strip()) for p in str(get("engine_log") or "").split(",") if p.strip())
    thresholds_dir = get("thresholds")
    datasets = get("datasets")
    return DsbenchOptions(
        engine=engine,
        hw=str(get("hw")),
        base_url=_check_url(get("base_url")),
        model=get("model"),
        served_model_name=get("served_model_name"),
        tokenizer=get("tokenizer"),
        engine_args=tuple(get("engine_arg") or ()),
        engine_env=_parse_env(list(get("engine_env") or ())),
        engine_python=get("engine_python"),
        engine_logs=logs,
        engine_host=str(get("engine_host")),
        api_key=get("api_key"),
        engine_startup_timeout_s=_as_float(spec["dsbench_engine_startup_timeout"], get("engine_startup_timeout")),
        request_timeout_s=_as_float(spec["dsbench_request_timeout"], get("request_timeout")),
        eplb=_check_choice(spec["dsbench_eplb"], str(get("eplb"))),
        eplb_ranks=_as_int(spec["dsbench_eplb_ranks"], get("eplb_ranks")),
        load_generator=_check_choice(spec["dsbench_load_generator"], str(get("load_generator"))),
        artifacts_dir=Path(str(get("artifacts"))),
        thresholds_dir=Path(thresholds_dir) if thresholds_dir else None,
        storage_dir=Path(str(get("storage"))),
        compare=get("compare"),
        regress_pct=_parse_regress(list(get("regress") or ())),
        force_compare=bool(get("force_compare")),
        datasets_dir=Path(datasets) if datasets else None,
        list_hw=bool(get("list_hw")),
        eval_python=get("eval_python"),
        eval_timeout_s=_as_float(spec["dsbench_eval_timeout"], get("eval_timeout")),
        accuracy_cache=not bool(get("no_accuracy_cache")),
        load_workers=_as_int(spec["dsbench_load_workers"], get("load_workers")) or 1,
        modules_scale=_check_choice(spec["dsbench_modules_scale"], str(get("modules_scale"))),
    )
