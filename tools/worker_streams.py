#!/usr/bin/env python3
"""How many concurrent streams one load worker sustains, and how many workers a stream count needs.

Drives the fast stream server (:mod:`pytest_dsbench.testing.fast_stream_server`, a process of its own) with
this suite's client and prints, per run, whether the client self-check judged it valid (not INVALID) and the
figures it judged by. Each stream count runs twice (``--repeats``): on a shared machine one noisy run is not a
verdict, so a count is sustained when the median run is valid.

    # the largest stream count one worker process sustains
    python tools/worker_streams.py --workers 1 --streams 500 1000 1500 2000 3000
    # 2,000 concurrent streams with 1..4 workers, as Ray tasks on a local Ray cluster
    python tools/worker_streams.py --streams 2000 --workers 1 2 3 4 --executor ray

Streams: ``--streams N`` concurrent requests (max_concurrency N), 2N requests in all so the N are held for two
waves, ``--output-len`` tokens each at the server's ``--ttft-ms`` / ``--itl-ms``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_dsbench.load.datasets import DatasetSpec  # noqa: E402
from pytest_dsbench.load.executors import make_executor  # noqa: E402
from pytest_dsbench.load.runner import LoadConfig, run_load  # noqa: E402
from pytest_dsbench.load.tokenizer import CharTokenizer  # noqa: E402
from pytest_dsbench.testing.fake_process import ServerProcess  # noqa: E402

SHOWN = (
    "client_cpu_util",
    "client_runnable_fraction",
    "client_loop_lag_ms_p90",
    "client_send_lag_ms_p90",
    "ttft_ms_median",
    "itl_ms_median",
    "output_tok_s",
)


def one_run(base_url: str, streams: int, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    cfg = LoadConfig(
        base_url=base_url,
        model="fast",
        dataset=DatasetSpec("random", streams * 2, 16, args.output_len, 1.0),
        max_concurrency=streams,
        workers=workers,
        settle_s=0.5,
        warm_connections=streams,
        request_timeout_s=120.0,
    )
    run = run_load(cfg, CharTokenizer(), executor=make_executor(args.executor, args.ray_address))
    assert run.client is not None
    values = {k: round(float(run.summary.values.get(k, float("nan"))), 3) for k in SHOWN}
    return {
        "streams": streams,
        "workers": workers,
        "executor": args.executor,
        "valid": run.valid,
        "completed": run.summary.completed,
        "requests": streams * 2,
        **values,
        "problems": run.client.problems,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, nargs="+", required=True)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--executor", choices=("thread", "process", "ray"), default="process")
    parser.add_argument("--ray-address", default=None, help="ray executor: the cluster (default: a local one)")
    parser.add_argument("--ttft-ms", type=float, default=100.0)
    parser.add_argument("--itl-ms", type=float, default=20.0)
    parser.add_argument("--output-len", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--server-cpu", type=int, default=None, help="pin the server to this CPU")
    parser.add_argument("--json", type=Path, default=None, help="also write every run here")
    args = parser.parse_args(argv)
    print(f"# {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: {' '.join(sys.argv)}", flush=True)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, ServerProcess.fast_stream(
        Path(tmp) / "server.log", ttft_ms=args.ttft_ms, itl_ms=args.itl_ms, cpu=args.server_cpu
    ) as server:
        for workers in args.workers:
            for streams in args.streams:
                repeats = [one_run(server.base_url, streams, workers, args) for _ in range(args.repeats)]
                runs += repeats
                for r in repeats:
                    print(json.dumps(r), flush=True)
                median_valid = statistics.median(1.0 if r["valid"] else 0.0 for r in repeats) >= 0.5
                print(f"## streams={streams} workers={workers}: {sum(r['valid'] for r in repeats)}/{len(repeats)} "
                      f"valid -> {'sustained' if median_valid else 'NOT sustained'}", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(runs, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
