#!/usr/bin/env bash
# Run the suite against a real engine on a GPU host with no network, from wheels prepared by
# tools/gpu_wheels.py (issue 17). Three steps, each usable in its own device call:
#
#   tools/gpu_run.sh stash DIR...            move carried bundle folders into the wheel store
#                                            ($DSBENCH_WHEEL_STORE, default /root/carry: outside the repository,
#                                            so it survives the next call's fresh copy of the working tree)
#   tools/gpu_run.sh install SUMS SITE       join NAME.partNN pieces in the store, check every wheel SUMS lists
#                                            (a SHA256SUMS written by gpu_wheels.py), pip install them
#                                            --no-index --no-deps into SITE and register this checkout's entry
#                                            points there (pytest11, the engines' EPLB plugins) without building
#   tools/gpu_run.sh pytest SITE ARGS...     run pytest from this checkout with PYTHONPATH=SITE:checkout,
#                                            exported so the engine's worker processes inherit it
#
# e.g. (the device tool; .gpu/whl holds one bundle per call):
#   call 1..3: bash tools/gpu_run.sh stash .gpu/whl/*
#   call 4:    bash tools/gpu_run.sh install .gpu/sums/sglang-0.5.17.SHA256SUMS /tmp/site-sglang &&
#              bash tools/gpu_run.sh pytest /tmp/site-sglang pytest_dsbench/suite --engine sglang --hw gpu1 -m api
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
checkout="$(dirname "$here")"
store="${DSBENCH_WHEEL_STORE:-/root/carry}"
python="${DSBENCH_PYTHON:-python3}"

usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

cmd="${1:-}"; [ -n "$cmd" ] || usage; shift
case "$cmd" in
  stash)
    [ $# -ge 1 ] || usage
    mkdir -p "$store"
    for dir in "$@"; do
      [ -d "$dir" ] || { echo "gpu_run.sh: no folder $dir" >&2; exit 1; }
      cp -f "$dir"/* "$store"/
    done
    echo "wheel store $store: $(ls "$store" | wc -l) files, $(du -sh "$store" | cut -f1)"
    ;;
  install)
    [ $# -eq 2 ] || usage
    sums="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; site="$2"
    "$python" "$here/gpu_wheels.py" --join "$store" >/dev/null
    (cd "$store" && sha256sum --quiet -c "$sums") || { echo "gpu_run.sh: checksum mismatch in $store" >&2; exit 1; }
    mapfile -t wheels < <(awk '{print "'"$store"'/" $2}' "$sums")
    rm -rf "$site"; mkdir -p "$site"
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "${wheels[@]}"
    "$python" "$here/gpu_wheels.py" --register "$checkout" --site "$site"
    echo "installed ${#wheels[@]} wheels into $site"
    ;;
  pytest)
    [ $# -ge 1 ] || usage
    site="$1"; shift
    export PYTHONPATH="$site:$checkout${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONUNBUFFERED=1
    cd "$checkout"
    exec "$python" -m pytest "$@"
    ;;
  *) usage ;;
esac
