#!/usr/bin/env bash
# Run on the GPU machine, from the repository root, through the device tool:
#   run(command="bash benchmarks/gpu/run.sh", carry=[".whl"], timeout_s=580)
# Installs the carried wheels (benchmarks/gpu/fetch_wheels.sh) and cvtrain (no TensorFlow
# there: Keras on JAX), then writes to $OUT: seconds per epoch of every CIFAR job at batch
# 32 (from cvtrain run), the whole earlystop job's wall time, precision and steps per
# execution variants of the improved model, ResNet50 fine-tuning images/s at 224 px, and the
# throughput of every CIFAR job (cvtrain's pipeline vs the compute ceiling). Each section
# has its own time limit, so one that hangs costs only its share. Budget: about 8 minutes.
#
# SMOKE=1 runs the same steps tiny, to check the script on a CPU before spending GPU time:
#   SMOKE=1 OUT=/tmp/out PYTHON=/path/to/python3.12 bash benchmarks/gpu/run.sh
set -uo pipefail
. benchmarks/gpu/setup.sh
smoke="${SMOKE:-}"
log="$OUT/gpu.log"
cv() { "$py" -m cvtrain "$@"; }
# section LIMIT_S NAME: a header, and the elapsed time when the section ends
t0=$SECONDS
section() { echo "== [$((SECONDS - t0)) s] $*"; }
if [ -n "$smoke" ]; then
  synth=(--classes 3 --train-per-class 40 --test-per-class 10); epochs=2; early=3
  tput=(--jobs basenet,dropout --epochs 2 --reps 1); tune=(--images 64 --epochs 2)
else
  synth=(--classes 25 --train-per-class 500 --test-per-class 100); epochs=3; early=100
  tput=(--epochs 3 --reps 1); tune=(--images 2048 --epochs 3)
fi
{
  nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv 2>&1
  "$py" -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"
  data=$(mktemp -d); runs=$(mktemp -d)
  cv data synth cifar100 "$data" "${synth[@]}" >/dev/null || exit 1
  tar="$data/cifar-100-binary.tar.gz"
  section "cvtrain run, every CIFAR job, $epochs epochs (seconds per epoch from history.csv)"
  for job in basenet normalize augment deeper batchnorm dropout bonus; do
    start=$SECONDS
    timeout 90 "$py" -m cvtrain run "$job" --set data.path="$tar" \
        --set training.epochs=$epochs --out "$runs" --run-id gpu >/dev/null 2>"$OUT/$job.err" \
        || { echo "$job failed:"; tail -3 "$OUT/$job.err"; continue; }
    echo "$job: $((SECONDS - start)) s wall; epoch seconds:" \
        "$(cut -d, -f6 "$runs/$job/gpu/history.csv" | tail -n +2 | paste -sd' ')"
  done
  "$py" -c "import json; m = json.load(open('$runs/dropout/gpu/metrics.json')); print(m['device'])"
  section "earlystop, the whole job (at most $early epochs, start-up included)"
  start=$SECONDS
  timeout 150 "$py" -m cvtrain run earlystop --set data.path="$tar" \
      --set training.epochs=$early --out "$runs" --run-id gpu 2>&1 | tail -8
  echo "earlystop wall: $((SECONDS - start)) s"
  "$py" -c "import json; m = json.load(open('$runs/earlystop/gpu/metrics.json')); \
print({k: m.get(k) for k in ('epochs_run', 'wall_seconds', 'fit_seconds', \
'train_images_per_second', 'test_accuracy')})"
  section "the improved model (dropout job): loop, precision, steps per execution"
  for variant in "CVTRAIN_JAX_LOOP=steps" "CVTRAIN_JAX_LOOP=steps training.steps_per_execution=1" \
                 "training.mixed_precision=off" "training.steps_per_execution=88"; do
    start=$SECONDS
    id="v$((SECONDS - t0))"
    env=(); sets=()
    for word in $variant; do
      case $word in CVTRAIN_*) env+=("$word");; *) sets+=(--set "$word");; esac
    done
    env "${env[@]}" timeout 60 "$py" -m cvtrain run dropout --set data.path="$tar" "${sets[@]}" \
        --set training.epochs=$epochs --out "$runs" --run-id "$id" >/dev/null \
        2>"$OUT/variant.err" || { echo "$variant failed:"; tail -3 "$OUT/variant.err"; continue; }
    echo "dropout $variant: $((SECONDS - start)) s wall; epoch seconds:" \
        "$(cut -d, -f6 "$runs/dropout/$id/history.csv" | tail -n +2 | paste -sd' ')"
  done
  section "ResNet50 fine-tuning, 224 px, batch 32, in-memory images"
  timeout 150 "$py" benchmarks/finetune_speed.py "${tune[@]}"
  section "throughput: cvtrain pipeline vs compute ceiling"
  timeout 200 "$py" benchmarks/throughput.py --backend jax "${tput[@]}" \
      --json "$OUT/throughput.json"
  section "done"
} 2>&1 | tee "$log"
