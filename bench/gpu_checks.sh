#!/usr/bin/env bash
# The GPU checks and benchmarks, in one go, for a machine with a CUDA GPU (CI has none):
#   the CUDA tests, bench/speed.py (CPU + CUDA), bench/pick_options.py (CUDA option sets)
#   and bench/train_speed.py (CPU + CUDA).
#
#   bash bench/gpu_checks.sh [MODEL]      # results in bench/results/*_gpu.json, or $OUT
#
# MODEL: a model file for the picking benchmarks (default: each benchmark trains a small
# default-architecture model first). Each step has its own time limit, so one slow step
# cannot take the others' results with it.
set -u
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
RESULTS=${OUT:-bench/results}
mkdir -p "$RESULTS"
MODEL_ARGS=()
[ $# -ge 1 ] && MODEL_ARGS=(--model "$1")
WORK=${WORK:-/tmp/selfpick-gpu-bench}
N=${N_MICROGRAPHS:-300}

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $RESULTS/NAME.log
    local name=$1 limit=$2; shift 2
    echo "=== $name (limit ${limit}s) $(date -u +%T)"
    timeout "$limit" "$@" >"$RESULTS/$name.log" 2>&1
    local rc=$?
    tail -n 25 "$RESULTS/$name.log"
    echo "=== $name: exit $rc $(date -u +%T)"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
python3 -c "import torch, selfpick; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.is_available(), 'selfpick', selfpick.__version__)"

step speed_gpu "${SPEED_LIMIT:-240}" python3 bench/speed.py --devices cpu,cuda \
    --n-micrographs "$N" --workdir "$WORK" --name speed_gpu "${MODEL_ARGS[@]}"
step pick_options_gpu "${OPTIONS_LIMIT:-150}" python3 bench/pick_options.py --device cuda \
    --n-micrographs "$N" --workdir "$WORK" --name pick_options_gpu "${MODEL_ARGS[@]}" \
    --options "" "--preprocess-on cpu" "--workers 8" "--workers 2" "--batch-size 4"
step tests_gpu "${TESTS_LIMIT:-110}" python3 -m pytest -q -x -p no:cacheprovider -n 8 \
    tests/picking tests/test_preprocess.py tests/training/test_experiment.py tests/model
step train_speed_gpu "${TRAIN_LIMIT:-80}" python3 bench/train_speed.py --devices cpu,cuda \
    --crops-per-epoch 256 --epochs 3 --workers 0,4 --name train_speed_gpu
if [ "$RESULTS" != bench/results ]; then
    cp bench/results/speed_gpu.json bench/results/pick_options_gpu.json \
       bench/results/train_speed_gpu.json "$RESULTS"/ 2>/dev/null
fi
ls -la "$RESULTS"
