"""Load runs report the per-rank and per-expert load the engine-side EPLB counter saw during the run only."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_dsbench.engines.base import EngineInfo
from pytest_dsbench.engines.vllm.behaviour import BEHAVIOUR as VLLM_BEHAVIOUR
from pytest_dsbench.gate import Gate
from pytest_dsbench.load import api
from pytest_dsbench.load.api import LoadContext, record_expert_load, run_workload
from pytest_dsbench.load.datasets import DatasetSpec
from pytest_dsbench.load.expert_load import ExpertLoadProbe
from pytest_dsbench.results import RunResults
from pytest_dsbench.testing.fake_process import ServerProcess
from pytest_dsbench.thresholds import load

torch = pytest.importorskip("torch")

from pytest_dsbench.eplb.runtime import EplbConfig, RoutingRecorder  # noqa: E402


def observer(counts: Path, ranks: int = 4) -> RoutingRecorder:
    return RoutingRecorder("vllm", EplbConfig(mode="observe", ranks=ranks, counts_path=counts), ranks, "linear")


def route(rec: RoutingRecorder, experts: list[int]) -> None:
    """One routing call of one token per entry, top_k = 1, on layer 0 of a 16-expert MoE."""
    rec.record(torch.tensor([[e] for e in experts], dtype=torch.int32), layer=0, num_experts=16)
    rec.flush()


def test_the_load_counts_only_what_was_routed_during_the_run(tmp_path: Path) -> None:
    counts = tmp_path / "counts.json"
    rec = observer(counts)
    route(rec, [0] * 100)  # the engine's warm-up: all on expert 0, must not count
    probe = ExpertLoadProbe(counts, settle_s=0.1, timeout_s=5).start()
    route(rec, [0, 4, 8, 12] * 5)  # one expert per rank: perfectly balanced
    load = probe.finish()
    assert load is not None
    assert load["routed_slots"] == 20
    assert load["per_rank"]["max_over_mean"] == pytest.approx(1.0)
    assert load["per_expert_worst_layer"]["max_over_mean"] == pytest.approx(4.0)  # 4 of 16 experts used


def test_no_counter_means_no_load_is_reported(tmp_path: Path) -> None:
    assert ExpertLoadProbe(tmp_path / "counts.json", settle_s=0.1, timeout_s=1).start().finish() is None


def context(base_url: str, counts: Path | None, artifacts: Path) -> LoadContext:
    engine = EngineInfo(name="vllm", version="0.32.0", base_url=base_url, model="fake-r1", model_path=None,
                        tokenizer_path=None, max_model_len=4096, behaviour=VLLM_BEHAVIOUR, mode="start",
                        eplb_mode="observe", eplb_counts_path=counts)
    options: Any = SimpleNamespace(tokenizer="chars", artifacts_dir=artifacts, request_timeout_s=30.0,
                                   load_workers=1, load_generator="dsbench", datasets_dir=None,
                                   load_executor=None, ray_address=None)
    return LoadContext(engine, options, load("cpu"))


def test_a_load_run_records_rank_and_expert_load_and_saves_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = tmp_path / "counts.json"
    rec = observer(counts)
    route(rec, [1] * 50)
    real_run_load = api.run_load

    def run_load_while_routing(*args: Any, **kwargs: Any) -> Any:
        route(rec, [0, 0, 0, 4])  # rank 0 gets 3 of 4 slots: max/mean over 4 ranks = 3
        return real_run_load(*args, **kwargs)

    monkeypatch.setattr(api, "run_load", run_load_while_routing)
    with ServerProcess.fake_engine({"ttft_ms": 5, "itl_ms": 2}, tmp_path / "fake.log") as server:
        ctx = context(server.base_url, counts, tmp_path / "artifacts")
        run = run_workload(ctx, DatasetSpec("random", 4, 16, 4, 1.0), name="probe", warmup_requests=0,
                           settle_s=0.0)
    assert run.expert_load is not None and run.expert_load["routed_slots"] == 4
    saved = json.loads((tmp_path / "artifacts" / "load" / "probe.expert-load.json").read_text())
    assert saved["per_rank"]["max_over_mean"] == pytest.approx(3.0)
    gate = Gate("t::x", RunResults())
    record_expert_load(gate, run)
    recorded = {r.metric: r.value for r in gate.recorded}
    assert recorded == {"rank_load_max_over_mean": pytest.approx(3.0), "expert_load_max_over_mean": pytest.approx(12.0)}
    assert gate.problems == []


def test_a_run_without_a_counter_records_no_load(tmp_path: Path) -> None:
    with ServerProcess.fake_engine({"ttft_ms": 5, "itl_ms": 2}, tmp_path / "fake.log") as server:
        run = run_workload(context(server.base_url, None, tmp_path), DatasetSpec("random", 2, 16, 4, 1.0),
                           name="plain", warmup_requests=0, settle_s=0.0)
    gate = Gate("t::x", RunResults())
    record_expert_load(gate, run)
    assert run.expert_load is None and gate.recorded == []
