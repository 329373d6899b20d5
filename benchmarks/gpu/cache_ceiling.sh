#!/usr/bin/env bash
# The GPU machine's second script (the first, run.sh, measured every job's epoch once).
# Through the device tool, after `bash benchmarks/gpu/fetch_wheels.sh` here:
#   run(command="bash benchmarks/gpu/cache_ceiling.sh", carry=[".whl"], timeout_s=590)
# Writes to $OUT:
#   1. the JAX compilation cache: the improved model (dropout job) run twice on a fresh
#      cache, first-epoch and later epoch seconds of each (EARLYSTOP=1: then the whole
#      earlystop job with the cache warm; its network is the improved model's);
#   2. the throughput table (cvtrain's pipeline against the compute ceiling, the ceiling
#      taking host batches as cvtrain's stream does), median of 3, for $TPUT_JOBS
#      (default basenet,dropout);
#   3. ResNet50 fine-tuning images/s and the frozen backbone's forward pass (what the
#      birds' feature extraction computes) at 224 px, for the cloud cost estimate.
# Each section has its own time limit. Budget: about 8 minutes.
#
# SMOKE=1 runs it tiny on a CPU first:
#   SMOKE=1 OUT=/tmp/out PYTHON=/path/to/python3.12 bash benchmarks/gpu/cache_ceiling.sh
set -uo pipefail
. benchmarks/gpu/setup.sh
smoke="${SMOKE:-}"
# a fresh cvtrain cache, so the first run below compiles and the second finds it all
CVTRAIN_CACHE=$(mktemp -d)
export CVTRAIN_CACHE
unset JAX_COMPILATION_CACHE_DIR
log="$OUT/gpu.log"
t0=$SECONDS
section() { echo "== [$((SECONDS - t0)) s] $*"; }
if [ -n "$smoke" ]; then
  synth=(--classes 3 --train-per-class 40 --test-per-class 10); epochs=2; early=3
  tput=(--jobs basenet --epochs 2 --reps 2); tune=(--images 32 --epochs 2)
else
  synth=(--classes 25 --train-per-class 500 --test-per-class 100); epochs=3; early=100
  tput=(--jobs "${TPUT_JOBS:-basenet,dropout}" --epochs 3 --reps 3); tune=(--images 2048 --epochs 3)
fi
epoch_seconds() { cut -d, -f6 "$1/history.csv" | tail -n +2 | paste -sd' '; }
{
  nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv 2>&1
  "$py" -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"
  data=$(mktemp -d); runs=$(mktemp -d)
  "$py" -m cvtrain data synth cifar100 "$data" "${synth[@]}" >/dev/null || exit 1
  tar="$data/cifar-100-binary.tar.gz"
  section "compilation cache: the improved model twice, $epochs epochs, fresh cache"
  for id in cold warm; do
    start=$SECONDS
    timeout 80 "$py" -m cvtrain run dropout --set data.path="$tar" --set training.epochs=$epochs \
        --out "$runs" --run-id "$id" >/dev/null 2>"$OUT/$id.err" \
        || { echo "$id failed:"; tail -3 "$OUT/$id.err"; continue; }
    echo "dropout $id: $((SECONDS - start)) s wall; epoch seconds: $(epoch_seconds "$runs/dropout/$id")"
  done
  du -sh "$CVTRAIN_CACHE/jax-compiled"
  [ -n "${EARLYSTOP:-}" ] && section "earlystop, the whole job (at most $early epochs, start-up included), cache warm"
  start=$SECONDS
  [ -n "${EARLYSTOP:-}" ] && timeout 100 "$py" -m cvtrain run earlystop --set data.path="$tar" \
      --set training.epochs=$early --out "$runs" --run-id gpu 2>&1 | tail -3
  [ -n "${EARLYSTOP:-}" ] && echo "earlystop wall: $((SECONDS - start)) s; first epochs:" \
      "$(epoch_seconds "$runs/earlystop/gpu" | cut -d' ' -f1-3)"
  section "throughput: cvtrain pipeline vs compute ceiling"
  timeout 200 "$py" benchmarks/throughput.py --backend jax "${tput[@]}" \
      --json "$OUT/throughput.json"
  section "ResNet50 at 224 px, batch 32: fine-tuning, and the backbone's forward pass"
  timeout 120 "$py" benchmarks/finetune_speed.py "${tune[@]}" --predict
  section "done"
} 2>&1 | tee "$log"
