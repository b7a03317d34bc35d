"""A run in sglang.bench_serving's own formats: its console block and its ``--output-file`` JSONL record.

The seeds take their numbers from these (seed 000 reads "Output token throughput (tok/s)" off the block; seed
003's tools parse the same block), so a run of this suite can be dropped into their spreadsheets as is.
Labels, order and number formats follow sglang 0.5.x (``benchmark/serving.py``).
"""

from __future__ import annotations

import math
from typing import Any

from pytest_dsbench.load.runner import LoadRun
from pytest_dsbench.metrics import output_len


def _row(label: str, value: Any, fmt: str = "") -> str:
    text = format(value, fmt) if fmt else str(value)
    return f"{label:<40} {text:<10}"


def _section(title: str) -> str:
    return f"{title:-^50}"


_STATS = (("Mean", "mean"), ("Median", "median"), ("P90", "p90"), ("P95", "p95"), ("P99", "p99"))
"""The statistics sglang prints per latency, in its order (ITL adds Max)."""


def sglang_text(run: LoadRun, backend: str = "dsbench") -> str:
    """The "Serving Benchmark Result" block, as sglang prints it."""
    v = run.summary.values
    s = run.summary
    cfg = run.config
    rate = "inf" if math.isinf(cfg.request_rate) else cfg.request_rate
    lines = [
        f"{' Serving Benchmark Result ':=^50}",
        _row("Backend:", backend),
        _row("Traffic request rate:", rate),
        _row("Max request concurrency:", cfg.max_concurrency if cfg.max_concurrency else "not set"),
        _row("Successful requests:", s.completed),
        _row("Benchmark duration (s):", s.duration_s, ".2f"),
        _row("Total input tokens:", s.total_input),
        _row("Total input text tokens:", s.total_input),
        _row("Total generated tokens:", s.total_output),
        _row("Total generated tokens (retokenized):", s.total_output_retokenized),
        _row("Request throughput (req/s):", v["request_throughput_req_s"], ".2f"),
        _row("Input token throughput (tok/s):", v["input_tok_s"], ".2f"),
        _row("Output token throughput (tok/s):", v["output_tok_s"], ".2f"),
        _row("Peak output token throughput (tok/s):", v["peak_output_tok_s"], ".2f"),
        _row("Peak concurrent requests:", int(v["peak_concurrent_requests"])),
        _row("Total token throughput (tok/s):", v["total_tok_s"], ".2f"),
        _row("Concurrency:", v["concurrency_mean"], ".2f"),
    ]
    sections = (
        ("e2e", "E2E Latency", "End-to-End Latency"),
        ("ttft", "TTFT", "Time to First Token"),
        ("tpot", "TPOT", "Time per Output Token (excl. 1st token)"),
        ("itl", "ITL", "Inter-Token Latency"),
    )
    for prefix, label, heading in sections:
        lines.append(_section(heading))
        stats = (*_STATS, ("Max", "max")) if prefix == "itl" else _STATS
        for stat_label, key in stats:
            lines.append(_row(f"{stat_label} {label} (ms):", v[f"{prefix}_ms_{key}"], ".2f"))
    lines.append("=" * 50)
    return "\n".join(lines) + "\n"


def sglang_record(run: LoadRun, backend: str = "dsbench", details: bool = True) -> dict[str, Any]:
    """The JSON line sglang appends to ``--output-file`` (with ``--output-details`` arrays when asked)."""
    v = run.summary.values
    s = run.summary
    cfg = run.config
    record: dict[str, Any] = {
        "tag": None,
        "backend": backend,
        "dataset_name": cfg.dataset.name,
        "request_rate": "inf" if math.isinf(cfg.request_rate) else cfg.request_rate,
        "max_concurrency": cfg.max_concurrency,
        "sharegpt_output_len": cfg.dataset.sharegpt_output_len,
        "random_input_len": cfg.dataset.input_len,
        "random_output_len": cfg.dataset.output_len,
        "random_range_ratio": cfg.dataset.range_ratio,
        "server_info": None,
        "duration": s.duration_s,
        "completed": s.completed,
        "total_input_tokens": s.total_input,
        "total_input_text_tokens": s.total_input,
        "total_input_vision_tokens": 0,
        "total_output_tokens": s.total_output,
        "total_output_tokens_retokenized": s.total_output_retokenized,
        "request_throughput": v["request_throughput_req_s"],
        "input_throughput": v["input_tok_s"],
        "output_throughput": v["output_tok_s"],
        "total_throughput": v["total_tok_s"],
        "concurrency": v["concurrency_mean"],
        "accept_length": None,
        "max_output_tokens_per_s": v["peak_output_tok_s"],
        "max_concurrent_requests": int(v["peak_concurrent_requests"]),
        "seed": cfg.dataset.seed,
        "num_prompts": cfg.dataset.num_prompts,
        "generator": run.generator,
    }
    for name, ours in (("e2e_latency", "e2e"), ("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl")):
        for st in ("mean", "median", "std", "p90", "p95", "p99"):
            record[f"{st}_{name}_ms"] = v[f"{ours}_ms_{st}"]
    record["max_itl_ms"] = v["itl_ms_max"]
    if details:
        recs = run.records
        record.update(
            {
                "input_lens": [r.prompt_len for r in recs],
                "output_lens": [output_len(r) for r in recs],
                "ttfts": [r.ttft_s or 0.0 for r in recs],
                "itls": [
                    [c[i] - c[i - 1] for i in range(1, len(c))] if r.success else [] for r in recs for c in (r.chunk_s,)
                ],
                "generated_texts": [r.text for r in recs],
                "errors": [r.error for r in recs],
            }
        )
    return record


def latency_line(run: LoadRun) -> str:
    """A one-line summary for logs and failure messages."""
    v = run.summary.values
    return (
        f"{run.summary.completed}/{len(run.records)} ok in {run.summary.duration_s:.2f} s; "
        f"TTFT mean {v['ttft_ms_mean']:.1f} ms p99 {v['ttft_ms_p99']:.1f}; "
        f"TPOT mean {v['tpot_ms_mean']:.2f} ms p99 {v['tpot_ms_p99']:.2f}; "
        f"ITL mean {v['itl_ms_mean']:.2f} ms; output {v['output_tok_s']:.1f} tok/s; "
        f"p50 e2e {v['e2e_ms_median']:.0f} ms"
    )
