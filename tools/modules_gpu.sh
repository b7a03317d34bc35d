#!/usr/bin/env bash
# Seed 002's per-module benchmarks at DeepSeek-R1's full dimensions on one GPU (issue 15), from a checkout, with
# no network. Needs python3 with torch (CUDA), numpy, pytest, pytest-benchmark, pydantic, httpx, orjson,
# packaging, jsonschema; vLLM is optional (without it the 60 block-FP8 benchmarks skip, saying why).
#
#   tools/modules_gpu.sh [SITE] [PYTEST ARGS...]
#
# SITE: an extra folder for PYTHONPATH holding the wheels the image lacks (e.g. from tools/gpu_run.sh install);
# "-" or nothing for none. Runs `pytest tests/modules -m modules --dsbench-modules-scale full --hw gpu1`, stores
# the run in .benchmarks/vllm-gpu1 (compare later runs with --dsbench-compare latest) and writes the tables to
# dsbench-artifacts/modules-gpu.log and the HTML report to dsbench-artifacts/dsbench-report.html.
# 193 benchmarks (133 without vLLM). Not yet timed on an H100: rounds are chosen for well under 6 minutes (the
# largest MoE call, 2048 tokens through 256 plain-torch experts, ~25 calls); a 9-minute timeout bounds it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
checkout="$(dirname "$here")"
python="${DSBENCH_PYTHON:-python3}"
site="${1:--}"; [ $# -gt 0 ] && shift
export PYTHONPATH="${checkout}${PYTHONPATH:+:$PYTHONPATH}"
[ "$site" != "-" ] && export PYTHONPATH="$site:$PYTHONPATH"
export PYTHONUNBUFFERED=1
cd "$checkout"
# the plugin loads through its pytest11 entry point when installed; from a bare checkout name it with -p
plugin=()
if ! "$python" -c "import importlib.metadata as m, sys; sys.exit(not any(e.name == 'dsbench' for e in m.entry_points(group='pytest11')))"; then
  plugin=(-p pytest_dsbench.plugin)
fi
mkdir -p dsbench-artifacts
set -o pipefail
timeout 540 "$python" -m pytest "${plugin[@]}" tests/modules -m modules --dsbench-modules-scale full --hw gpu1 \
  -p no:cacheprovider -rs --benchmark-columns=median,iqr,rounds,iterations "$@" 2>&1 | tee dsbench-artifacts/modules-gpu.log
