"""One load run end to end: prompts, schedule, warmup, workers, merged records, metrics, self-check, raw file.

``run_load(config, tokenizer)`` is the whole API. It follows sglang.bench_serving's procedure (bench_tools.md
(c)): warmup copies of request 0 with ``max_tokens = min(output_len, 32)`` at the run's concurrency, abort if
none succeeds, settle for a second, then the measured run; the duration runs from the first dispatch until the
last request finished. Requests are split round-robin over the workers, and so is max-concurrency.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pytest_dsbench._http import auth_headers
from pytest_dsbench.load import arrivals, datasets
from pytest_dsbench.load.client import encode_body, payload
from pytest_dsbench.load.executors import Executor, StartGate, ThreadExecutor, default_executor
from pytest_dsbench.load.http import Target
from pytest_dsbench.load.records import RequestRecord, merge, write_jsonl
from pytest_dsbench.load.selfcheck import ClientCheck, ClientLimits, check
from pytest_dsbench.load.tokenizer import Tokenizer, encoded_lengths
from pytest_dsbench.load.worker import PlannedRequest, WorkerPlan, WorkerResult
from pytest_dsbench.metrics import GoodputSlo, Summary, summarize
from pytest_dsbench.progress import Progress

if TYPE_CHECKING:
    from pytest_dsbench.load.server_metrics import ServerMetricsReport


class LoadError(RuntimeError):
    """A run that could not be measured at all (e.g. every warmup request failed); one-line message."""


@dataclass(frozen=True)
class LoadConfig:
    """A workload against one server: data set, arrivals, concurrency and request options."""

    base_url: str
    model: str
    dataset: datasets.DatasetSpec
    endpoint: Literal["completions", "chat"] = "completions"
    request_rate: float = math.inf
    burstiness: float = 1.0
    max_concurrency: int | None = None
    warmup_requests: int = 1
    warmup_fresh_prompts: bool = False
    """Warm up with prompts of their own (same lengths, another seed) instead of copies of request 0 (sglang's
    way): copies are one prefill and then prefix-cache hits, and they leave request 0 cached for the run."""
    settle_s: float = 1.0
    ignore_eos: bool = True
    temperature: float = 0.0
    include_usage: bool = True
    workers: int = 1
    request_timeout_s: float = 600.0
    api_key: str | None = field(default=None, repr=False)
    extra_body: dict[str, Any] = field(default_factory=dict)
    devices: int = 1
    goodput: GoodputSlo | None = None
    limits: ClientLimits = field(default_factory=ClientLimits)
    cpu_affinity: tuple[int, ...] | None = None
    use_uvloop: bool = True
    warm_connections: int = 1024
    max_duration_s: float | None = None
    prefix_cache: Literal["cold", "warm"] = "cold"
    """``cold``: warm-up prompts are salted apart from the measured ones (:mod:`~pytest_dsbench.load.prefix_cache`);
    ``warm``: sglang's warm-up copies of request 0, and the cache is left as it is."""
    prompt_salt: int | None = None
    """Salt the measured prompts with this (a cold run against an engine that cannot empty its cache)."""

    def workload(self) -> dict[str, Any]:
        """What was run, for reports and history (never the API key)."""
        return {
            **self.dataset.describe(),
            "endpoint": self.endpoint,
            "request_rate": "inf" if math.isinf(self.request_rate) else self.request_rate,
            "burstiness": self.burstiness,
            "max_concurrency": self.max_concurrency,
            "warmup_requests": self.warmup_requests,
            **({"warmup_fresh_prompts": True} if self.warmup_fresh_prompts else {}),
            "ignore_eos": self.ignore_eos,
            "temperature": self.temperature,
            "workers": self.workers,
            **({"prefix_cache": "warm"} if self.prefix_cache == "warm" else {}),
        }


@dataclass
class LoadRun:
    """A finished run: records, metrics, the client's health, and where the raw records are."""

    config: LoadConfig
    records: list[RequestRecord]
    summary: Summary
    client: ClientCheck | None
    generator: str = "dsbench"
    raw_path: Path | None = None
    started_at: float = 0.0
    reference: dict[str, Any] | None = None
    expert_load: dict[str, Any] | None = None
    """Per-rank / per-expert load during the run (:mod:`pytest_dsbench.load.expert_load`), when exposed."""
    server_metrics: ServerMetricsReport | None = None
    """The engine's /metrics during the run (:mod:`pytest_dsbench.load.server_metrics`)."""
    invalid_reasons: list[str] = field(default_factory=list)
    """Why the run is INVALID besides the client self-check (e.g. a cold run that hit the prefix cache)."""

    @property
    def valid(self) -> bool:
        return (self.client is None or self.client.valid) and not self.invalid_reasons

    def invalid_message(self) -> str:
        """Every reason the run is INVALID, for the error that stops its tests."""
        reasons = [self.client.message()] if self.client is not None and not self.client.valid else []
        return "; ".join(reasons + self.invalid_reasons)

    @property
    def workload(self) -> dict[str, Any]:
        return {**self.config.workload(), "generator": self.generator}

    def errors(self, limit: int = 3) -> list[str]:
        """The first distinct request errors (for failure messages)."""
        seen: list[str] = []
        for r in self.records:
            if r.error and r.error not in seen:
                seen.append(r.error)
        return seen[:limit]


def _plans(
    cfg: LoadConfig, prompts: list[datasets.Prompt], offsets: list[float], headers: dict[str, str]
) -> list[WorkerPlan]:
    target = Target.parse(cfg.base_url)
    path = "/v1/chat/completions" if cfg.endpoint == "chat" else "/v1/completions"
    workers = max(1, min(cfg.workers, cfg.max_concurrency or cfg.workers, len(prompts)))
    shares: list[list[PlannedRequest]] = [[] for _ in range(workers)]
    for i, (prompt, offset) in enumerate(zip(prompts, offsets, strict=True)):
        body = payload(
            cfg.model,
            prompt.text,
            prompt.output_len,
            chat=cfg.endpoint == "chat",
            ignore_eos=cfg.ignore_eos,
            temperature=cfg.temperature,
            include_usage=cfg.include_usage,
            extra=cfg.extra_body,
        )
        data = target.request_bytes(path, encode_body(body), headers)
        shares[i % workers].append(PlannedRequest(i, offset, data, prompt.prompt_len, prompt.output_len))
    plans = []
    for w, share in enumerate(shares):
        limit = None
        if cfg.max_concurrency:
            limit = cfg.max_concurrency // workers + (1 if w < cfg.max_concurrency % workers else 0)
        plans.append(
            WorkerPlan(
                worker=w,
                base_url=cfg.base_url,
                requests=share,
                chat=cfg.endpoint == "chat",
                max_concurrency=limit,
                timeout_s=cfg.request_timeout_s,
                cpu_affinity=cfg.cpu_affinity,
                use_uvloop=cfg.use_uvloop,
                warm_connections=min(cfg.warm_connections, limit or cfg.warm_connections),
                deadline_s=cfg.max_duration_s,
            )
        )
    return plans


WARMUP_SEED_OFFSET = 1_000_003
"""Added to the data set's seed for fresh warmup prompts (``warmup_fresh_prompts``): never the run's own."""


def _warmup(cfg: LoadConfig, tokenizer: Tokenizer, first: datasets.Prompt, headers: dict[str, str]) -> None:
    if cfg.warmup_requests <= 0:
        return
    if cfg.warmup_fresh_prompts:
        spec = replace(cfg.dataset, num_prompts=cfg.warmup_requests, seed=cfg.dataset.seed + WARMUP_SEED_OFFSET)
        prompts = datasets.build(spec, tokenizer)
    else:
        prompts = [first] * cfg.warmup_requests
    if cfg.prefix_cache == "cold":
        from pytest_dsbench.load.prefix_cache import new_salt

        prompts = datasets.salted(prompts, tokenizer, new_salt())  # never the measured prompts' blocks
    short = [datasets.Prompt(p.text, p.prompt_len, min(p.output_len, 32)) for p in prompts]
    plans = _plans(replace(cfg, workers=1), short, [0.0] * len(short), headers)
    result = ThreadExecutor().run(plans)[0]
    if not any(r.success for r in result.records):
        error = next((r.error for r in result.records if r.error), "no response")
        raise LoadError(
            f"warmup failed: none of {cfg.warmup_requests} warmup request(s) to {cfg.base_url} "
            f"succeeded ({error[:200]}). Check --base-url, the served model name and the API key."
        )
    if cfg.settle_s > 0:
        time.sleep(cfg.settle_s)


PROGRESS_POLL_S = 0.5


def _run_with_progress(
    executor: Executor, plans: list[WorkerPlan], total: int, name: str, start: StartGate | None
) -> list[WorkerResult]:
    """Run the plans on a helper thread while this (pytest's) thread reports finished requests live."""
    import multiprocessing as mp
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import wait as wait_for

    finished = mp.get_context("spawn").Value("q", 0)
    for plan in plans:
        plan.finished = finished
    with Progress(total, name, "req", step_pct=25) as progress, ThreadPoolExecutor(1) as pool:
        future = pool.submit(executor.run, plans, start)
        while not wait_for([future], timeout=PROGRESS_POLL_S).done:
            progress.update(int(finished.value))
        progress.update(int(finished.value))
        return future.result()


def run_load(
    cfg: LoadConfig,
    tokenizer: Tokenizer,
    *,
    executor: Executor | None = None,
    raw_dir: Path | None = None,
    name: str = "load",
    start: StartGate | None = None,
    before_run: Callable[[], None] | None = None,
) -> LoadRun:
    """Run the workload and return records, metrics and the client self-check; raw JSONL goes to ``raw_dir``.

    ``start`` holds the measured run (after the warmup and settle) until it returns; see
    :data:`~pytest_dsbench.load.executors.StartGate`. ``before_run`` is called after the warm-up and settle,
    just before the measured run (the prefix-cache reset and the server metrics' measured start).
    """
    prompts = datasets.build(cfg.dataset, tokenizer)
    if cfg.prompt_salt is not None:
        prompts = datasets.salted(prompts, tokenizer, cfg.prompt_salt)
    offsets = arrivals.schedule(len(prompts), cfg.request_rate, cfg.burstiness, cfg.dataset.seed)
    headers = auth_headers(cfg.api_key)
    _warmup(cfg, tokenizer, prompts[0], headers)
    if before_run is not None:
        before_run()
    plans = _plans(cfg, prompts, offsets, headers)
    started_at = time.time()
    gc_enabled = gc.isenabled()
    gc.disable()  # no collector pauses while streams are timed: the client's records hold no cycles
    try:
        results = _run_with_progress(executor or default_executor(len(plans)), plans, len(prompts), name, start)
    finally:
        if gc_enabled:
            gc.enable()
    records = merge([r.records for r in results])
    stats = [r.stats for r in results]
    duration = max((s.wall_s + s.late_start_s for s in stats), default=0.0)
    done = [r for r in records if r.success]
    for r, n in zip(done, encoded_lengths(tokenizer, [r.text for r in done]), strict=True):
        r.retok_len = n
    summary = summarize(records, duration, devices=cfg.devices, goodput=cfg.goodput)
    offered = None if math.isinf(cfg.request_rate) else arrivals.offered_rate(offsets)
    client = check(
        records,
        stats,
        offered if offered and not math.isinf(offered) else None,
        cfg.limits,
        closed_loop=cfg.max_concurrency is not None,
    )
    summary.values.update(client.values)
    summary.values["unsent_requests"] = float(sum(s.unsent for s in stats))
    run = LoadRun(config=cfg, records=records, summary=summary, client=client, started_at=started_at)
    if raw_dir is not None:
        run.raw_path = save_raw(run, raw_dir, name)
    return run


def save_raw(run: LoadRun, raw_dir: Path, name: str) -> Path:
    """Write the run's per-request records as JSONL, headed by the workload, summary and client health."""
    header = {
        "name": name,
        "generator": run.generator,
        "started_at": run.started_at,
        "workload": run.workload,
        "summary": run.summary.as_dict(),
        "valid": run.valid,
        "client": None if run.client is None else asdict(run.client),
        **({"invalid_reasons": run.invalid_reasons} if run.invalid_reasons else {}),
    }
    return write_jsonl(raw_dir / f"{name}.jsonl", run.records, header)
