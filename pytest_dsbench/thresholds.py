"""Hardware profiles: ``thresholds/<hw>.toml``, validated when pytest configures.

A profile says what a deployment on that hardware looks like (devices, parallelism, limits), how each engine is
launched there, and what it must achieve (SLOs, throughput workloads and their floors, accuracy floors,
regression limits). Errors name the file, the key and the valid values, so a typo never becomes a traceback.

A limit on a metric is always named ``{metric}_max`` (lower is better) or ``{metric}_min`` (higher is better),
after the metric's declaration in :mod:`pytest_dsbench.metrics`; a limit key that names no declared metric, or
one the table does not take, is an error listing the limit keys that table takes. Each ``[throughput.NAME]``
entry is validated by the configuration model of its ``method`` (:mod:`pytest_dsbench.workloads`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from pytest_dsbench import metrics
from pytest_dsbench.errors import ThresholdsError
from pytest_dsbench.metrics import Limit
from pytest_dsbench.packaged import data_dir
from pytest_dsbench.workloads import EVALUATION_METHODS, WORKLOAD_CONFIGS, WorkloadConfig
from pytest_dsbench.workloads.entry import STRICT, EngineName, PositiveFloat, PositiveInt

SCHEMA_VERSION = 1
LIMIT_SUFFIXES = ("_max", "_min")


class _Strict(BaseModel):
    model_config = STRICT


class Hardware(_Strict):
    """The machine a deployment runs on."""

    name: str
    accelerator: str
    devices: PositiveInt = Field(description="accelerators one deployment uses (per-GPU figures divide by this)")
    memory_gib_per_device: PositiveFloat
    description: str = ""


class Deployment(_Strict):
    """Parallelism and request limits of one way of deploying DeepSeek on this hardware."""

    tensor_parallel: PositiveInt = 1
    pipeline_parallel: PositiveInt = 1
    data_parallel: PositiveInt = 1
    expert_parallel: PositiveInt = 1
    max_model_len: PositiveInt
    max_input_len: PositiveInt
    max_input_len_enforced: bool = Field(
        default=False, description="the server itself rejects prompts over max_input_len with a 4xx (seed 004's "
        "vacc build); false where only max_model_len is enforced (upstream vLLM/SGLang/LMDeploy)")
    max_batch_size: PositiveInt | None = None
    max_concurrency: PositiveInt | None = None
    cache_ratio: Annotated[float, Field(gt=0, le=1)] | None = None
    mtp: bool = False
    mtp_supported: bool = True
    engine_args: list[str] = []
    engine_env: dict[str, str] = {}
    description: str = ""

    @model_validator(mode="after")
    def _limits_are_consistent(self) -> Deployment:
        if self.max_input_len > self.max_model_len:
            raise ValueError(f"max_input_len ({self.max_input_len}) exceeds max_model_len ({self.max_model_len})")
        if self.mtp and not self.mtp_supported:
            raise ValueError("mtp = true but this deployment does not support MTP (mtp_supported = false)")
        return self


class EngineLaunch(_Strict):
    """Extra launch arguments and environment for one engine on this hardware."""

    args: list[str] = []
    env: dict[str, str] = {}


class Slo(_Strict):
    """Latency and error limits every load test on this hardware must meet."""

    tpot_ms_mean_max: PositiveFloat = 50.0
    tpot_ms_p99_max: PositiveFloat | None = None
    ttft_ms_p99_max: PositiveFloat | None = None
    #: the typical first token, robust to the few stalls a p99 over 100 requests still sees on a shared host
    ttft_ms_median_max: PositiveFloat | None = None
    itl_ms_p99_max: PositiveFloat | None = None
    error_rate_max: Annotated[float, Field(ge=0, le=1)] = 0.0
    workload: str | None = Field(default=None, description="[throughput.NAME] workload the SLO tests run: a "
                                 "random, deeplink or tencent one (default: tencent, else the first of those)")
    goodput_ttft_ms_max: PositiveFloat | None = None
    goodput_tpot_ms_max: PositiveFloat | None = None
    goodput_e2e_ms_max: PositiveFloat | None = None
    goodput_fraction_min: Annotated[float, Field(ge=0, le=1)] | None = None
    health_latency_s_max: PositiveFloat = Field(
        default=2.0, description="longest GET /health may take while streams generate (API check A06)")
    # limits on the engine's own /metrics during the SLO run and every load run (none by default)
    preemptions_max: Annotated[float, Field(ge=0)] | None = None
    requests_waiting_peak_max: Annotated[float, Field(ge=0)] | None = None
    kv_cache_usage_peak_max: Annotated[float, Field(ge=0, le=1)] | None = None
    spec_decode_acceptance_rate_min: Annotated[float, Field(ge=0, le=1)] | None = None
    spec_decode_acceptance_length_min: Annotated[float, Field(ge=1)] | None = None

    not_limits: ClassVar[frozenset[str]] = frozenset(
        {"goodput_ttft_ms_max", "goodput_tpot_ms_max", "goodput_e2e_ms_max"})
    """Keys ending in ``_max`` that are not limits on a run's metric: the per-request thresholds of the goodput
    rule (a request is good when its TTFT, TPOT and e2e stay within them)."""


class Evidence(_Strict):
    """The least evidence a measured figure needs (:mod:`pytest_dsbench.evidence`); below it the run is INVALID,
    as MLPerf LoadGen's runs below their minimum duration and query count."""

    min_duration_s: Annotated[float, Field(ge=0)] = Field(
        default=1.0, description="shortest measured run (or ali decode time at one batch size) a figure is taken from")
    min_samples: Annotated[int, Field(ge=1)] = Field(
        default=8, description="fewest observations (requests, repeats, slices) behind a figure")
    tail_samples: Annotated[int, Field(ge=0)] = Field(
        default=1, description="observations a pNN figure needs above it: p99 needs 100 samples with 1 "
        "(0: only min_samples)")
    consistency_tolerance_pct: PositiveFloat = Field(
        default=25.0, description="largest disagreement between two figures of one run that measure the same "
        "thing (ali decode per-user tok/s vs 1000 / TPOT) before the run is INVALID")


class AccuracyFloor(_Strict):
    """A data set, how many samples to score, and the lowest acceptable score (0..1)."""

    floor: Annotated[float, Field(ge=0, le=1)]
    limit: PositiveInt | None = None
    engines: dict[EngineName, Annotated[float, Field(ge=0, le=1)]] = {}
    subset: str | None = None
    source: str = ""
    benchmark: str | None = Field(default=None, description=(
        "EvalScope benchmark name (default: the table key); 'general_qa' = a local NAME.jsonl of "
        "{query, response} lines (NAME = subset or the key), scored by exact match"))
    max_tokens: PositiveInt | None = Field(default=None, description="overrides accuracy_settings.max_tokens")


class GenerationSettings(_Strict):
    """Sampling settings for accuracy runs (DeepSeek-R1's recommendation by default)."""

    temperature: Annotated[float, Field(ge=0)] = 0.6
    top_p: Annotated[float, Field(gt=0, le=1)] = 0.95
    max_tokens: PositiveInt = 32768
    answer_after_think: bool = True
    seed: int | None = Field(default=None, description="per-request sampling seed (reproducible sampling)")
    concurrency: PositiveInt | None = Field(default=None, description=(
        "parallel accuracy requests (default: deployment.max_concurrency, else 8)"))


class HardwareProfile(_Strict):
    """One ``thresholds/<hw>.toml`` file."""

    schema_version: Literal[1]
    hardware: Hardware
    deployment: Deployment
    deployments: dict[str, Deployment] = {}
    engines: dict[EngineName, EngineLaunch] = {}
    slo: Slo = Slo()
    evidence: Evidence = Evidence()
    throughput: dict[str, WorkloadConfig] = {}
    accuracy: dict[str, AccuracyFloor] = {}
    accuracy_settings: GenerationSettings = GenerationSettings()
    regress_pct: dict[str, Annotated[float, Field(ge=0)]] = {}

    # Set by the loader, not by the file.
    path: Path | None = Field(default=None, exclude=True)
    deployment_name: str = Field(default="default", exclude=True)

    def where(self, key: str) -> str:
        """Where a limit comes from, for messages: ``"cpu.toml [slo] tpot_ms_mean_max"`` (the profile's name when
        it was not read from a file)."""
        return f"{self.path.name if self.path else self.hardware.name} {key}"

    def slo_limit(self, metric: str) -> Limit:
        """The ``[slo]`` limit on ``metric`` (its ``{metric}_max`` / ``_min`` key; value None when unset)."""
        key = metrics.get(metric).limit_key
        value = getattr(self.slo, key, None)
        return Limit(None if value is None else float(value), self.where(f"[slo] {key}"))

    def launch(self, engine: str) -> EngineLaunch:
        """Launch extras for ``engine`` (empty when the profile has none)."""
        return self.engines.get(engine, EngineLaunch())

    def accuracy_floor(self, dataset: str, engine: str) -> float:
        """The floor for ``dataset``, with a per-engine override when the profile gives one."""
        floor = self.accuracy[dataset]
        value: float = floor.engines.get(engine, floor.floor)  # type: ignore[call-overload]
        return value


def default_dir() -> Path:
    """The project's thresholds folder: the copy bundled in the wheel, or a source checkout's."""
    return data_dir("thresholds")


def available(directory: Path) -> list[str]:
    """Profile names in ``directory``, sorted."""
    return sorted(p.stem for p in directory.glob("*.toml"))


def limit_keys(table: type[BaseModel]) -> list[str]:
    """The metric limits a table takes (``{metric}_max`` / ``{metric}_min`` keys)."""
    skip: frozenset[str] = getattr(table, "not_limits", frozenset())
    return [key for key in table.model_fields if key.endswith(LIMIT_SUFFIXES) and key not in skip]


def _check_limit_keys(tables: list[type[BaseModel]]) -> None:
    """Every limit key of the schema names a declared metric in its direction (a mistake here is the
    project's, so it fails at import, not in a user's run)."""
    for table in tables:
        for key in limit_keys(table):
            declared = metrics.METRICS.get(key[:-4])
            if declared is None or declared.limit_key != key:
                raise TypeError(f"{table.__name__}.{key} is not the limit key of a declared metric")


def _unknown_key(key: str, table: type[BaseModel], what: str) -> str:
    """Why ``key`` is not a key of ``table`` (``what``: "[slo]", "a tencent entry"), with what to write."""
    valid = ", ".join(table.model_fields)
    replaced: dict[str, str] = getattr(table, "replaced_keys", {})
    if key in replaced:
        return f"not a key of {what}: use {replaced[key]}; valid keys: {valid}"
    if not key.endswith(LIMIT_SUFFIXES):
        return f"unknown key; valid keys of {what}: {valid}"
    limits = ", ".join(limit_keys(table)) or "(none)"
    name = key[:-4]
    declared = metrics.METRICS.get(name)
    if declared is None:
        import difflib

        close = difflib.get_close_matches(name, list(metrics.METRICS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problem = f"limit key names no declared metric {name!r}{hint}"
    elif declared.limit_key != key:
        problem = f"{name} is {declared.direction.replace('_', ' ')}, so its limit is {declared.limit_key}"
    else:
        problem = f"{what} sets no limit on {name}"
    return f"{problem}; valid limit keys of {what}: {limits}"


def _format_validation(path: Path, error: ValidationError) -> str:
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"]]
    kind = first["type"]
    message = first["msg"]
    table: type[BaseModel] | None = None
    what = ""
    if len(loc) >= 2 and loc[0] == "throughput" and kind in ("union_tag_invalid", "union_tag_not_found"):
        loc.append("method")
        valid = ", ".join(map(repr, EVALUATION_METHODS))
        message = "unknown method" if kind == "union_tag_invalid" else "required key is missing"
        message += f"; valid values: {valid}"
    elif len(loc) >= 3 and loc[0] == "throughput" and loc[2] in WORKLOAD_CONFIGS:
        table, what = WORKLOAD_CONFIGS[loc[2]], f"{'an' if loc[2][0] in 'aeiou' else 'a'} {loc[2]} entry"
        del loc[2]  # the method pydantic told the entry's model by, not a key of the file
    elif loc and loc[0] == "slo":
        table, what = Slo, "[slo]"
    key = ".".join(loc) or "(top level)"
    if kind == "extra_forbidden":
        message = _unknown_key(loc[-1], table, what) if table is not None else "unknown key"
    elif kind == "missing":
        message = "required key is missing"
    elif kind == "value_error":
        message = message.removeprefix("Value error, ")
    ctx = first.get("ctx") or {}
    if "expected" in ctx:
        message += f"; valid values: {ctx['expected']}"
    got = first.get("input") if kind != "union_tag_invalid" else ctx.get("tag")
    got_text = "" if kind in ("missing", "union_tag_not_found") or isinstance(got, dict) else f" (got {got!r})"
    more = f" (+{len(error.errors()) - 1} more problem(s))" if len(error.errors()) > 1 else ""
    return f"{path}: key '{key}': {message}{got_text}{more}"


_check_limit_keys([Slo, *WORKLOAD_CONFIGS.values()])


def load(hw: str, directory: Path | None = None) -> HardwareProfile:
    """Load and validate the profile ``hw`` (``NAME`` or ``NAME/DEPLOYMENT``)."""
    directory = directory or default_dir()
    name, _, deployment_name = hw.partition("/")
    path = directory / f"{name}.toml"
    if not path.is_file():
        names = ", ".join(available(directory)) or "(none)"
        raise ThresholdsError(
            f"unknown hw profile {name!r}: no {path}. Valid profiles: {names}. "
            f"Add {name}.toml there or pass --dsbench-thresholds DIR."
        )
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ThresholdsError(f"{path}: not valid TOML: {exc}") from None
    try:
        profile = HardwareProfile.model_validate(data)
    except ValidationError as exc:
        raise ThresholdsError(_format_validation(path, exc)) from None
    deployment = profile.deployment
    if deployment_name:
        if deployment_name not in profile.deployments:
            valid = ", ".join(sorted(profile.deployments)) or "(none)"
            raise ThresholdsError(
                f"{path}: no deployment {deployment_name!r} (key 'deployments.{deployment_name}'). "
                f"Valid deployments: {valid}."
            )
        deployment = profile.deployments[deployment_name]
    return profile.model_copy(
        update={"path": path, "deployment": deployment, "deployment_name": deployment_name or "default"}
    )


def describe_all(directory: Path | None = None) -> list[str]:
    """One line per profile and deployment, for ``--dsbench-list-hw``."""
    directory = directory or default_dir()
    lines = []
    for name in available(directory):
        try:
            profile = load(name, directory)
        except ThresholdsError as exc:
            lines.append(f"{name:10s} INVALID: {exc}")
            continue
        hw = profile.hardware
        dep = profile.deployment
        lines.append(
            f"{name:10s} {hw.devices} x {hw.accelerator} ({hw.memory_gib_per_device:g} GiB) "
            f"tp{dep.tensor_parallel} pp{dep.pipeline_parallel} dp{dep.data_parallel} ep{dep.expert_parallel} "
            f"max-model-len {dep.max_model_len}  TPOT<= {profile.slo.tpot_ms_mean_max:g} ms  {hw.description}"
        )
        for variant in sorted(profile.deployments):
            d = profile.deployments[variant]
            lines.append(
                f"{name + '/' + variant:10s}   tp{d.tensor_parallel} pp{d.pipeline_parallel} "
                f"max-input-len {d.max_input_len} max-model-len {d.max_model_len} mtp={'yes' if d.mtp else 'no'} "
                f"{d.description}"
            )
    return lines
