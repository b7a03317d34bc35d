"""Hardware profiles: ``thresholds/<hw>.toml``, validated when pytest configures.

A profile says what a deployment on that hardware looks like (devices, parallelism, limits), how each engine is
launched there, and what it must achieve (SLOs, throughput baselines, accuracy floors, regression limits).
Errors name the file, the key and the valid values, so a typo never becomes a traceback.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from pytest_dsbench.engines.registry import ENGINE_NAMES, valid_engines
from pytest_dsbench.errors import ThresholdsError

SCHEMA_VERSION = 1
EVALUATION_METHODS = ("deeplink", "tencent", "ali_decode", "ali_prefill", "random")

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


def _registered_engine(name: str) -> str:
    if name not in ENGINE_NAMES:
        raise PydanticCustomError("unknown_engine", "unknown engine", {"expected": valid_engines()})
    return name


EngineName = Annotated[str, AfterValidator(_registered_engine)]
"""An engine of :mod:`pytest_dsbench.engines.registry` (the ``[engines.NAME]`` keys)."""


class EngineLaunch(_Strict):
    """Extra launch arguments and environment for one engine on this hardware."""

    args: list[str] = []
    env: dict[str, str] = {}


class Slo(_Strict):
    """Latency and error limits every load test on this hardware must meet."""

    tpot_ms_mean_max: PositiveFloat = 50.0
    tpot_ms_p99_max: PositiveFloat | None = None
    ttft_ms_p99_max: PositiveFloat | None = None
    itl_ms_p99_max: PositiveFloat | None = None
    error_rate_max: Annotated[float, Field(ge=0, le=1)] = 0.0
    workload: str | None = Field(default=None, description="[throughput.NAME] entry the SLO tests run "
                                 "(default: tencent, else the first entry)")
    goodput_ttft_ms_max: PositiveFloat | None = None
    goodput_tpot_ms_max: PositiveFloat | None = None
    goodput_e2e_ms_max: PositiveFloat | None = None
    goodput_fraction_min: Annotated[float, Field(ge=0, le=1)] | None = None
    health_latency_s_max: PositiveFloat = Field(
        default=2.0, description="longest GET /health may take while streams generate (API check A06)")


class ThroughputBaseline(_Strict):
    """A workload of one of the seeds' evaluation methods and the floor its result must reach."""

    method: Literal["deeplink", "tencent", "ali_decode", "ali_prefill", "random"]
    input_len: PositiveInt
    output_len: PositiveInt
    num_prompts: PositiveInt
    max_concurrency: PositiveInt | None = None
    request_rate: PositiveFloat | None = None
    batch_sizes: list[PositiveInt] = []
    output_tok_s_min: PositiveFloat | None = None
    total_tok_s_min: PositiveFloat | None = None
    input_tok_s_per_device_min: PositiveFloat | None = None
    qpm_min: PositiveFloat | None = None
    engines: list[Literal["vllm", "sglang", "lmdeploy"]] = []
    source: str = ""
    seed: int | None = None
    range_ratio: Annotated[float, Field(ge=0, le=1)] | None = None
    search_max_probes: PositiveInt | None = None
    search_time_budget_s: PositiveFloat | None = None
    dataset: Literal["random", "random-ids", "sharegpt", "fixed"] = Field(
        default="random", description="prompts of the 'random' and SLO workloads (sharegpt: the file in "
        "--dsbench-datasets)")
    burstiness: PositiveFloat | None = Field(
        default=None, description="gamma arrivals (1 = Poisson, < 1 burstier) at request_rate")


class AccuracyFloor(_Strict):
    """A data set, how many samples to score, and the lowest acceptable score (0..1)."""

    floor: Annotated[float, Field(ge=0, le=1)]
    limit: PositiveInt | None = None
    engines: dict[Literal["vllm", "sglang", "lmdeploy"], Annotated[float, Field(ge=0, le=1)]] = {}
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
    throughput: dict[str, ThroughputBaseline] = {}
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

    def launch(self, engine: str) -> EngineLaunch:
        """Launch extras for ``engine`` (empty when the profile has none)."""
        return self.engines.get(engine, EngineLaunch())

    def accuracy_floor(self, dataset: str, engine: str) -> float:
        """The floor for ``dataset``, with a per-engine override when the profile gives one."""
        floor = self.accuracy[dataset]
        value: float = floor.engines.get(engine, floor.floor)  # type: ignore[call-overload]
        return value


def default_dir() -> Path:
    """The project's thresholds folder (source checkout), or the copy bundled in the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "thresholds", here / "_data" / "thresholds"):
        if candidate.is_dir():
            return candidate
    return here.parent / "thresholds"


def available(directory: Path) -> list[str]:
    """Profile names in ``directory``, sorted."""
    return sorted(p.stem for p in directory.glob("*.toml"))


def _format_validation(path: Path, error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    ctx = first.get("ctx") or {}
    if "expected" in ctx:
        message += f"; valid values: {ctx['expected']}"
    got = first.get("input")
    got_text = "" if first["type"] == "missing" or isinstance(got, dict) else f" (got {got!r})"
    more = f" (+{len(error.errors()) - 1} more problem(s))" if len(error.errors()) > 1 else ""
    return f"{path}: key '{key}': {message}{got_text}{more}"


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
