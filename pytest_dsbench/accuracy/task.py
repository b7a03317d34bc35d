"""What one accuracy run is: data set, EvalScope benchmark, sample limit, floor and generation settings.

An :class:`AccuracyTask` is built from the hardware profile (``[accuracy.<dataset>]`` and
``[accuracy_settings]`` in ``thresholds/<hw>.toml``), the engine and the options. Everything that can change a
score is in it, so its :meth:`AccuracyTask.cache_key` decides when a stored result may be reused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pytest_dsbench.accuracy.datasets import DataSource, resolve_data
from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.thresholds import HardwareProfile

#: Bump when the way results are produced or stored changes, so old cache entries stop matching.
CACHE_FORMAT = 1
#: Local question/answer sets in EvalScope's general_qa layout; scored by exact match (see the child script).
LOCAL_QA_BENCHMARK = "general_qa"
DEFAULT_CONCURRENCY = 8
#: Tokens kept free for the prompt when ``max_tokens`` is clamped to the engine's context.
PROMPT_RESERVE_TOKENS = 4096
END_THINK = "</think>"


@dataclass(frozen=True)
class GenerationSettings:
    """The sampling settings sent with every accuracy request (DeepSeek-R1's recommendation by default)."""

    temperature: float
    top_p: float
    max_tokens: int
    answer_after_think: bool
    seed: int | None = None

    def generation_config(self) -> dict[str, Any]:
        """EvalScope's ``generation_config``."""
        config: dict[str, Any] = {"temperature": self.temperature, "top_p": self.top_p,
                                  "max_tokens": self.max_tokens}
        if self.seed is not None:
            config["seed"] = self.seed
        return config


def clamp_max_tokens(max_tokens: int, max_model_len: int | None) -> int:
    """``max_tokens`` reduced so a prompt still fits the engine's context (a 32k answer on 32k fails)."""
    if not max_model_len or max_tokens + PROMPT_RESERVE_TOKENS <= max_model_len:
        return max_tokens
    return max(1, min(max_tokens, max(max_model_len - PROMPT_RESERVE_TOKENS, max_model_len // 2)))


@dataclass(frozen=True)
class AccuracyTask:
    """One data set to score against one floor."""

    dataset: str
    benchmark: str
    subset: str | None
    limit: int | None
    floor: float
    floor_source: str
    settings: GenerationSettings
    concurrency: int
    data: DataSource

    @property
    def exact_match_qa(self) -> bool:
        """True for a local question/answer set (scored by exact match)."""
        return self.benchmark == LOCAL_QA_BENCHMARK

    def workload(self) -> dict[str, Any]:
        """What was measured, for history comparisons (equal workloads only are compared)."""
        return {
            "dataset": self.dataset, "benchmark": self.benchmark, "subset": self.subset, "limit": self.limit,
            **asdict(self.settings), "data": self.data.fingerprint,
        }

    def cache_key(self, engine: EngineInfo, evalscope_version: str) -> str:
        """A digest of everything that can change the score: engine, model, data, limit and settings."""
        identity = {
            "format": CACHE_FORMAT, "engine": engine.name, "engine_version": engine.version,
            "model": engine.model, "model_path": engine.model_path, "evalscope": evalscope_version,
            **self.workload(),
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def _display_path(path: Path | None) -> str:
    if path is None:
        return "thresholds"
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return f"thresholds/{path.name}" if path.parent.name == "thresholds" else str(path)


def build_task(profile: HardwareProfile, dataset: str, engine: EngineInfo,
               datasets_dir: Path | None) -> AccuracyTask:
    """The task for ``[accuracy.<dataset>]`` of ``profile`` on ``engine`` (per-engine floors applied)."""
    entry = profile.accuracy[dataset]
    floor = profile.accuracy_floor(dataset, engine.name)
    key = f"engines.{engine.name}" if engine.name in entry.engines else "floor"
    source = f"{_display_path(profile.path)} accuracy.{dataset}.{key}"
    base = profile.accuracy_settings
    settings = GenerationSettings(
        temperature=base.temperature, top_p=base.top_p,
        max_tokens=clamp_max_tokens(entry.max_tokens or base.max_tokens, engine.max_model_len),
        answer_after_think=base.answer_after_think, seed=base.seed,
    )
    benchmark = entry.benchmark or dataset
    subset = entry.subset or (dataset if benchmark == LOCAL_QA_BENCHMARK else None)
    concurrency = base.concurrency or profile.deployment.max_concurrency or DEFAULT_CONCURRENCY
    return AccuracyTask(
        dataset=dataset, benchmark=benchmark, subset=subset, limit=entry.limit, floor=floor,
        floor_source=source, settings=settings, concurrency=concurrency,
        data=resolve_data(dataset, benchmark, subset, datasets_dir, local_qa=benchmark == LOCAL_QA_BENCHMARK),
    )
