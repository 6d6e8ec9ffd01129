#!/usr/bin/env bash
# AlignBench's GPU measurements in one device call (docs/gpu.md): install what the device image lacks, then
# `python benchmarks/gpu.py run --out $OUT` (every measurement in order of value, each under its own timeout,
# about 8 minutes in all).
#
# 1. On the CPU machine, once per change of the pinned versions (about 1 MB; needs the package registry):
#        bash benchmarks/gpu_wheels.sh                      # -> build/gpu-wheels/
# 2. Rehearse on the CPU (tiny sizes, short timeouts, the same steps, the same files):
#        OUT=/tmp/gpu-rehearsal bash benchmarks/gpu.sh --dry-run      # or ALIGNBENCH_GPU_REHEARSAL=1
# 3. The device call, from the repository root (command, paths to carry, limit in seconds):
#        command: bash benchmarks/gpu.sh      carry: ["build/gpu-wheels"]      timeout_s: 540
# 4. Back on the CPU machine, with the folder the files came back to:
#        python benchmarks/gpu.py collect FILES_AT            # -> results/bench/*_<gpu>_cuda.{json,md}
#
# Other arguments go to gpu.py run (--only, --skip, --timeout NAME=SECONDS, --budget-s).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

rehearsal=${ALIGNBENCH_GPU_REHEARSAL:-0}
args=()
for a in "$@"; do
    if [ "$a" = "--dry-run" ]; then rehearsal=1; else args+=("$a"); fi
done
if [ -z "${OUT:-}" ]; then
    echo "gpu.sh: set OUT to the folder for the results (the device machine sets it), e.g. OUT=/tmp/gpu-rehearsal" >&2
    exit 2
fi
mkdir -p "$OUT" || { echo "gpu.sh: cannot create OUT=$OUT" >&2; exit 2; }
py=${PYTHON:-python3}
wheels=build/gpu-wheels
site=${ALIGNBENCH_GPU_SITE:-/tmp/alignbench-site}
log="$OUT/log_cuda.txt"
echo "===== setup ($(date -u +%FT%TZ))" > "$log"

# 1. the carried wheels (datasets, anls, ... pinned in requirements.txt), into a folder of their own
if [ ! -f "$wheels/requirements.txt" ]; then
    echo "gpu.sh: no $wheels/requirements.txt: run bash benchmarks/gpu_wheels.sh here and carry $wheels" | tee -a "$log" >&2
    wheels_rc=missing
elif [ "$rehearsal" = 1 ]; then  # resolve them for the device's Python 3.12 without installing anything here
    "$py" -m pip install --dry-run --no-index --no-deps --only-binary=:all: --python-version 3.12 \
        --target "$site-dry-run" --find-links "$wheels" -r "$wheels/requirements.txt" >>"$log" 2>&1
    wheels_rc=$?
else
    "$py" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        --find-links "$wheels" -r "$wheels/requirements.txt" >>"$log" 2>&1
    wheels_rc=$?
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi

# 2. the project itself, without its dependencies (the image has the rest)
if [ "$rehearsal" = 1 ]; then  # here it is installed already: it must be this checkout
    "$py" -c 'import alignbench, pathlib, sys; sys.exit(pathlib.Path(alignbench.__file__).resolve().parents[1] != pathlib.Path.cwd().resolve())' \
        >>"$log" 2>&1
    project_rc=$?
    if [ "$project_rc" != 0 ]; then
        echo "gpu.sh: $py does not import alignbench from $(pwd); run pip install -e . first" | tee -a "$log" >&2
        exit 2
    fi
else
    "$py" -m pip install --quiet --no-index --no-deps --no-build-isolation -e . >>"$log" 2>&1
    project_rc=$?
    if [ "$project_rc" != 0 ]; then  # a copy instead of the editable install
        "$py" -m pip install --quiet --no-index --no-deps --no-build-isolation --target "$site" . >>"$log" 2>&1
        project_rc="editable:$project_rc,copy:$?"
    fi
fi
export ALIGNBENCH_GPU_SETUP="wheels=$wheels_rc project=$project_rc"
echo "gpu.sh: setup $ALIGNBENCH_GPU_SETUP" | tee -a "$log"

# 3. the measurements
if [ "$rehearsal" = 1 ]; then args+=(--rehearsal); fi
exec "$py" benchmarks/gpu.py run --out "$OUT" "${args[@]}"
