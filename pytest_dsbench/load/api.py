"""The bridge between the suite's fixtures and the load generator: one call runs a workload against the engine.

``run_workload(ctx, dataset, name=...)`` picks the client (``--load-generator``: this suite's, or the official
sglang.bench_serving), fills in the engine's URL, model, API key and tokenizer, the profile's device count and
goodput limits, saves the raw per-request JSONL under ``<artifacts>/load/`` (a stable folder that survives
passing tests), and returns the run. Around it the engine's /metrics is sampled
(:mod:`~pytest_dsbench.load.server_metrics`) and, for a cold workload, its prefix cache is emptied or the prompts
salted (:mod:`~pytest_dsbench.load.prefix_cache`). A run whose client was the bottleneck, or a cold run that hit
the prefix cache, raises :class:`InvalidRun`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pytest_dsbench import metrics
from pytest_dsbench.errors import DsbenchUsageError, InvalidRun
from pytest_dsbench.load.datasets import SHAREGPT_FILE, DatasetSpec
from pytest_dsbench.load.executors import StartGate
from pytest_dsbench.load.expert_load import ExpertLoadProbe
from pytest_dsbench.load.expert_load import save as save_expert_load
from pytest_dsbench.load.runner import LoadConfig, LoadError, LoadRun, run_load, save_raw
from pytest_dsbench.load.server_metrics import ServerMetricsProbe
from pytest_dsbench.load.tokenizer import load_tokenizer
from pytest_dsbench.metrics import GoodputSlo, Limit

if TYPE_CHECKING:
    from pytest_dsbench.engines.base import EngineInfo
    from pytest_dsbench.gate import Gate
    from pytest_dsbench.options import DsbenchOptions
    from pytest_dsbench.thresholds import HardwareProfile
    from pytest_dsbench.workloads.entry import OneRunWorkload


@dataclass(frozen=True)
class LoadContext:
    """What every load test needs from the fixtures."""

    engine: EngineInfo
    options: DsbenchOptions
    hw: HardwareProfile

    @property
    def results_dir(self) -> Path:
        """Stable folder for raw records and seed-format outputs (not the per-test folder deleted on pass)."""
        return (self.options.artifacts_dir / "load").resolve()

    @property
    def tokenizer_spec(self) -> str | None:
        return self.options.tokenizer or self.engine.tokenizer_path or self.engine.model_path

    @property
    def sharegpt_path(self) -> Path | None:
        """A local ShareGPT file in ``--dsbench-datasets``, if there is one (the seeds' source text)."""
        folder = self.options.datasets_dir
        if folder is not None and (folder / SHAREGPT_FILE).is_file():
            return folder / SHAREGPT_FILE
        return None

    @property
    def goodput(self) -> GoodputSlo:
        slo = self.hw.slo
        return GoodputSlo(
            ttft_ms=slo.goodput_ttft_ms_max, tpot_ms=slo.goodput_tpot_ms_max, e2e_ms=slo.goodput_e2e_ms_max
        )

    @property
    def workers(self) -> int:
        return self.options.load_workers


def workload_dataset(ctx: LoadContext, name: str, workload: OneRunWorkload) -> DatasetSpec:
    """The prompts of a ``[throughput.NAME]`` workload: its data set, lengths, count, seed and range ratio."""
    dataset = workload.dataset_name()
    if dataset == "sharegpt" and ctx.sharegpt_path is None:
        raise DsbenchUsageError(
            f"{ctx.hw.path} [throughput.{name}] dataset = 'sharegpt' needs {SHAREGPT_FILE} in the folder "
            "given by --dsbench-datasets."
        )
    return DatasetSpec(
        name=dataset,
        num_prompts=workload.num_prompts,
        input_len=workload.input_len,
        output_len=workload.output_len,
        range_ratio=1.0 if workload.range_ratio is None else workload.range_ratio,
        seed=workload.seed or 1,
        dataset_path=ctx.sharegpt_path,
        sharegpt_output_len=workload.output_len if dataset == "sharegpt" else None,
    )


def workload_arrivals(workload: OneRunWorkload) -> dict[str, Any]:
    """Request rate (inf: all at once), burstiness and max concurrency of a ``[throughput.NAME]`` workload, and
    whether its prompts may be served from the prefix cache (``prefix_cache``)."""
    arrivals: dict[str, Any] = {
        "request_rate": workload.request_rate or math.inf,
        "max_concurrency": workload.max_concurrency,
        "prefix_cache": workload.prefix_cache,
    }
    burstiness = workload.arrival_burstiness()
    if burstiness is not None:
        arrivals["burstiness"] = burstiness
    return arrivals


def workload_config(
    ctx: LoadContext,
    dataset: DatasetSpec,
    *,
    name: str,
    request_rate: float = math.inf,
    max_concurrency: int | None = None,
    endpoint: Literal["completions", "chat"] = "completions",
    warmup_requests: int = 1,
    settle_s: float = 1.0,
    **overrides: Any,
) -> LoadConfig:
    """The load configuration of one workload against the engine under test (URL, model, key, limits)."""
    engine = ctx.engine
    max_input = max(1, (engine.max_model_len or ctx.hw.deployment.max_model_len) - dataset.output_len)
    if dataset.input_len > max_input:
        raise DsbenchUsageError(
            f"workload {name!r}: input_len {dataset.input_len} + output_len "
            f"{dataset.output_len} exceeds the engine's max_model_len "
            f"{engine.max_model_len}; lower it in {ctx.hw.path}."
        )
    cfg = LoadConfig(
        base_url=engine.base_url,
        model=engine.model,
        dataset=dataset,
        endpoint=endpoint,
        request_rate=request_rate,
        max_concurrency=max_concurrency,
        warmup_requests=warmup_requests,
        settle_s=settle_s,
        workers=ctx.workers,
        request_timeout_s=ctx.options.request_timeout_s,
        api_key=engine.api_key,
        devices=ctx.hw.hardware.devices,
        goodput=ctx.goodput,
    )
    return replace(cfg, **overrides) if overrides else cfg


def run_workload(
    ctx: LoadContext,
    dataset: DatasetSpec,
    *,
    name: str,
    allow_invalid: bool = False,
    start: StartGate | None = None,
    **config: Any,
) -> LoadRun:
    """Run one workload against the engine under test with the configured client.

    ``config`` is :func:`workload_config`'s (rate, concurrency, endpoint, ...). ``start`` holds the measured run
    (:data:`~pytest_dsbench.load.executors.StartGate`); only this suite's client can be held.
    """
    engine = ctx.engine
    spec = ctx.tokenizer_spec
    if spec is None:
        raise DsbenchUsageError(
            "load tests need the model's tokenizer for token-exact prompts: pass "
            "--tokenizer PATH (a local folder), or --tokenizer chars for a fake engine."
        )
    cfg = workload_config(ctx, dataset, name=name, **config)
    probe = ExpertLoadProbe(engine.eplb_counts_path).start() if engine.eplb_counts_path is not None else None
    server = ServerMetricsProbe(engine.base_url, engine.behaviour.server_metrics, api_key=engine.api_key).start()
    cfg, before_run = _cache_control(ctx, cfg, server)
    try:
        if ctx.options.load_generator == "sglang":
            from pytest_dsbench.load.sglang_bridge import run_sglang

            before_run()
            run = run_sglang(cfg, spec, ctx.results_dir, name)
        else:
            run = run_load(
                cfg, load_tokenizer(spec), raw_dir=ctx.results_dir, name=name, start=start, before_run=before_run
            )
    except LoadError as exc:
        raise LoadError(f"{name}: {exc}") from None
    finally:
        server.finish()
    _judge_server_metrics(ctx, run, server, name)
    if probe is not None:
        run.expert_load = probe.finish()
        if run.expert_load is not None:
            save_expert_load(run.expert_load, ctx.results_dir, name)
    if not run.valid and not allow_invalid:
        raise InvalidRun(f"{name}: {run.invalid_message()} (records: {run.raw_path})")
    return run


def _cache_control(
    ctx: LoadContext, cfg: LoadConfig, server: ServerMetricsProbe
) -> tuple[LoadConfig, Callable[[], None]]:
    """How a cold run keeps the prefix cache cold: the engine's reset (tried once now, again just before the
    measured run), else salted prompts; returns the configuration and the call made before the measured run."""
    from pytest_dsbench.load import prefix_cache

    engine = ctx.engine
    report = server.report
    if cfg.prefix_cache == "warm":
        report.cache_control = "warm"
        return cfg, server.mark_measured_start
    can_reset, detail = prefix_cache.reset(engine.base_url, engine.behaviour.prefix_cache_reset_path, engine.api_key)
    if not can_reset:
        if ctx.options.load_generator == "sglang":
            report.cache_control = "none"
            report.note = "; ".join(filter(None, [report.note, f"prefix cache not reset ({detail}); "
                                               "sglang.bench_serving builds its own prompts: not salted"]))
            return cfg, server.mark_measured_start
        report.cache_control = "salted"
        report.note = "; ".join(filter(None, [report.note, f"prefix cache not reset ({detail}): prompts salted"]))
        return replace(cfg, prompt_salt=prefix_cache.new_salt()), server.mark_measured_start
    report.cache_control = "reset"

    def reset_then_mark() -> None:
        done, why = prefix_cache.reset(engine.base_url, engine.behaviour.prefix_cache_reset_path, engine.api_key)
        if not done:
            report.note = "; ".join(filter(None, [report.note, f"prefix cache reset before the run failed ({why})"]))
        server.mark_measured_start()

    return cfg, reset_then_mark


def _judge_server_metrics(ctx: LoadContext, run: LoadRun, server: ServerMetricsProbe, name: str) -> None:
    """Attach the server-metrics report to the run, save it, and mark a cold run that hit the cache INVALID."""
    from pytest_dsbench import _atomic
    from pytest_dsbench.load.prefix_cache import cold_cache_problem

    report = server.report
    run.server_metrics = report
    _atomic.write_json(ctx.results_dir / f"{name}.server-metrics.json", report.as_dict())
    if run.config.prefix_cache == "cold" and run.generator == "dsbench":
        problem = cold_cache_problem(report)
        if problem is not None:
            run.invalid_reasons.append(problem)
            if run.raw_path is not None:
                save_raw(run, ctx.results_dir, name)


def record_run_metric(
    gate: Gate,
    run: LoadRun,
    metric: str,
    limit: Limit | None = None,
    *,
    value: float | None = None,
    workload: dict[str, Any] | None = None,
) -> None:
    """Record one of a load run's metrics through its declaration: its value (the run's own unless ``value``
    says otherwise), its samples and sample count, against ``limit`` (None: recorded, not limited)."""
    measured = metrics.get(metric).measure(run.summary, value)
    gate.record(
        metric,
        measured.value,
        samples=measured.samples,
        sample_count=measured.sample_count,
        limit=None if limit is None else limit.value,
        limit_source="" if limit is None else limit.source,
        workload=run.workload if workload is None else workload,
    )


def record_run_health(
    gate: Gate, run: LoadRun, error_rate: Limit, limits: Callable[[str], Limit] | None = None
) -> None:
    """What every load run records besides its own metrics: the error rate against its limit, expert load, and
    the engine's server metrics (against ``limits``, the profile's ``[slo]`` ones)."""
    record_run_metric(gate, run, "error_rate", error_rate)
    record_expert_load(gate, run)
    record_server_metrics(gate, run, limits)


def record_server_metrics(
    gate: Gate, run: LoadRun, limits: Callable[[str], Limit] | None = None, only: Sequence[str] | None = None
) -> list[str]:
    """Record the server metrics the engine's /metrics gave for ``run`` (``only``: just those), each against its
    limit from ``limits`` (None: recorded, not limited), with the report stored alongside; returns the names
    recorded. Without /metrics nothing is recorded (the report's note says why)."""
    from pytest_dsbench.load.server_metrics import RUN_METRICS

    report = run.server_metrics
    if report is None or not report.available:
        return []
    summary = report.summary()
    extra = {"server_metrics": report.as_dict()}
    recorded = []
    for metric in only if only is not None else RUN_METRICS:
        if metric not in summary:
            continue
        limit = limits(metric) if limits is not None else None
        gate.record(
            metric,
            summary[metric],
            samples=report.samples(metric),
            sample_count=len(report.window),
            limit=None if limit is None else limit.value,
            limit_source=f"engine /metrics; {limit.source}" if limit is not None else "engine /metrics",
            workload=run.workload,
            extra=extra,
        )
        recorded.append(metric)
    return recorded


def record_expert_load(gate: Gate, run: LoadRun) -> None:
    """Per-rank and per-expert load (max/mean) of the run, where the engine exposed its routing (informational:
    no limit, but stored in history and compared by the regression gate)."""
    load = run.expert_load
    if load is None:
        return
    extra = {"expert_load": load}
    for metric, stats in (
        ("rank_load_max_over_mean", load["per_rank"]),
        ("expert_load_max_over_mean", load["per_expert_worst_layer"]),
    ):
        if stats:
            gate.record(
                metric,
                float(stats["max_over_mean"]),
                sample_count=int(load["routed_slots"]),
                limit_source=f"dsbench EPLB counter ({load['mode']}, {load['ranks']} ranks)",
                workload=run.workload,
                extra=extra,
            )


def workload_params(hw: HardwareProfile, engine: str) -> list[Any]:
    """``pytest.param((name, workload), id=name)`` for each ``[throughput.NAME]`` workload of the profile.

    Workloads limited to other engines are skipped with the reason; no workload at all gives one skipped param.
    """
    import pytest

    entries = list(hw.throughput.items())
    if not entries:
        return [pytest.param(None, id="none", marks=pytest.mark.skip(reason=f"{hw.path} has no [throughput.*] entry"))]
    params = []
    for name, workload in entries:
        marks = []
        if workload.engines and engine not in workload.engines:
            marks.append(pytest.mark.skip(reason=f"[throughput.{name}] is for {', '.join(workload.engines)}"))
        params.append(pytest.param((name, workload), id=name, marks=marks))
    return params


def slo_workload(profile: HardwareProfile) -> tuple[str, OneRunWorkload] | None:
    """The workload the SLO tests load the engine with: ``[slo] workload``, else tencent, else the first one-run
    workload (random, deeplink or tencent; an ali workload is a series of runs)."""
    from pytest_dsbench.workloads.entry import OneRunWorkload

    wanted = profile.slo.workload
    if wanted:
        if wanted not in profile.throughput:
            raise DsbenchUsageError(
                f"{profile.path}: [slo] workload = {wanted!r} is not a [throughput.*] entry "
                f"(valid: {', '.join(sorted(profile.throughput)) or 'none'})."
            )
        chosen = profile.throughput[wanted]
        if not isinstance(chosen, OneRunWorkload):
            one_run = [n for n, w in profile.throughput.items() if isinstance(w, OneRunWorkload)]
            raise DsbenchUsageError(
                f"{profile.path}: [slo] workload = {wanted!r} is an {chosen.method} entry, a series of runs; "
                f"name a random, deeplink or tencent entry (valid: {', '.join(sorted(one_run)) or 'none'})."
            )
        return wanted, chosen
    tencent = profile.throughput.get("tencent")
    if isinstance(tencent, OneRunWorkload):
        return "tencent", tencent
    return next(((n, w) for n, w in profile.throughput.items() if isinstance(w, OneRunWorkload)), None)
