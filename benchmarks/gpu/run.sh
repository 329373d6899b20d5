#!/usr/bin/env bash
# Run on the GPU machine, from the repository root, through the device tool:
#   run(command="bash benchmarks/gpu/run.sh", carry=[".whl"], timeout_s=540)
# Installs the carried wheels and cvtrain (no TensorFlow there: Keras on JAX), then writes
# to $OUT: the throughput of every CIFAR job (cvtrain's pipeline vs the compute ceiling),
# seconds per epoch of every CIFAR job at batch 32 (from cvtrain run), the whole earlystop
# job's wall time, and ResNet50 fine-tuning images/s at 224 px. Budget: about 8 minutes.
set -uo pipefail
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD"
log="$OUT/gpu.log"
{
  nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv
  python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"
  data=/tmp/cifar; runs=/tmp/runs
  python3 -m cvtrain data synth cifar100 "$data" --classes 25 --train-per-class 500 \
      --test-per-class 100 >/dev/null
  echo "== cvtrain run, every CIFAR job, 3 epochs (seconds per epoch in history.csv)"
  for job in basenet normalize augment deeper batchnorm dropout bonus; do
    start=$SECONDS
    python3 -m cvtrain run "$job" --set data.path="$data/cifar-100-binary.tar.gz" \
        --set training.epochs=3 --out "$runs" --run-id gpu >/dev/null 2>"$OUT/$job.err" \
        || { echo "$job failed:"; tail -3 "$OUT/$job.err"; continue; }
    echo "$job: $((SECONDS - start)) s wall; epoch seconds:" \
        "$(cut -d, -f6 "$runs/$job/gpu/history.csv" | tail -n +2 | paste -sd' ')"
  done
  echo "== earlystop, the whole job (at most 100 epochs, start-up included)"
  start=$SECONDS
  python3 -m cvtrain run earlystop --set data.path="$data/cifar-100-binary.tar.gz" \
      --out "$runs" --run-id gpu 2>&1 | tail -12
  echo "earlystop wall: $((SECONDS - start)) s"
  python3 -c "import json; m = json.load(open('$runs/earlystop/gpu/metrics.json')); \
print({k: m[k] for k in ('epochs_run', 'wall_seconds', 'fit_seconds', 'train_images_per_second', 'test_accuracy')}, m['device'])"
  echo "== throughput: cvtrain pipeline vs compute ceiling"
  python3 benchmarks/throughput.py --backend jax --epochs 3 --reps 3 --json "$OUT/throughput.json"
  echo "== ResNet50 fine-tuning, 224 px, batch 32, in-memory images"
  python3 benchmarks/finetune_speed.py
} 2>&1 | tee "$log"
