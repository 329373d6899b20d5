#!/usr/bin/env bash
# Checkpoints within an epoch on a GPU (JAX, one call per execution), through the device tool:
#   run(command="bash benchmarks/gpu/midepoch.sh", carry=[".whl"], timeout_s=420)
# (wheels: benchmarks/gpu/fetch_wheels.sh). The improved model (dropout, batch norm,
# augmentation in the step), seeded, 2 epochs of 352 steps at 32 per execution, run three
# ways: uninterrupted; with a checkpoint at every pause between executions
# (training.checkpoint_minutes=0.000001: 20 within the epochs); and SIGTERM after the 14th
# pause (epoch 2 step 128), then resumed. Writes to $OUT/midepoch.log whether the three
# give the same history and test numbers, and the training seconds of each.
#
# SMOKE=1 runs it tiny, to check the script on a CPU before spending GPU time:
#   SMOKE=1 OUT=/tmp/out bash benchmarks/gpu/midepoch.sh
set -uo pipefail
. benchmarks/gpu/setup.sh
if [ -n "${SMOKE:-}" ]; then
  synth=(--classes 3 --train-per-class 40 --test-per-class 10); more=(--set
  training.steps_per_execution=1 --set data.num_classes=3); due=5
else
  synth=(--classes 25 --train-per-class 500 --test-per-class 100); more=(); due=14
fi
data=$(mktemp -d); runs=$(mktemp -d)
"$py" -m cvtrain data synth cifar100 "$data" "${synth[@]}" >/dev/null || exit 1
args=(run dropout --set data.path="$data/cifar-100-binary.tar.gz" --set training.epochs=2
      "${more[@]}" --seed 0 --out "$runs")
timed() {  # NAME COMMAND...: its exit code and wall seconds; its output in $OUT/NAME.txt
  local name=$1 start=$SECONDS; shift
  "$@" >"$OUT/$name.txt" 2>&1
  echo "$name: exit $? after $((SECONDS - start)) s wall"
}
{
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1
  "$py" -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"
  timed whole timeout 120 "$py" -m cvtrain "${args[@]}" --run-id whole
  timed often timeout 120 "$py" -m cvtrain "${args[@]}" --run-id often \
      --set training.checkpoint_minutes=0.000001
  timed cut timeout 120 "$py" tests/kill_at.py "cvtrain.training.fitting:Interval.due@$due" \
      SIGTERM "${args[@]}" --run-id cut
  tail -1 "$OUT/cut.txt"
  timed resumed timeout 120 "$py" -m cvtrain "${args[@]}" --run-id cut
  grep -h "resumed from" "$OUT/resumed.txt"
  "$py" - "$runs/dropout" <<'EOF'
import json, sys
from pathlib import Path

from cvtrain import runs

root = Path(sys.argv[1])
def result(run_id):
    m = json.loads((root / run_id / runs.METRICS).read_text())
    rows = runs.parse_history((root / run_id / runs.HISTORY).read_text())
    curves = [(r["epoch"], r["loss"], r["accuracy"], r["val_loss"], r["val_accuracy"])
              for r in rows]
    return m, curves
whole, often, cut = (result(r) for r in ("whole", "often", "cut"))
for name, (m, curves) in (("whole", whole), ("often", often), ("cut", cut)):
    print(f"{name}: test accuracy {m['test_accuracy']} loss {m['test_loss']}; fit "
          f"{m['fit_seconds']} s; epoch seconds {[r['seconds'] for r in runs.parse_history((root / m['run_id'] / runs.HISTORY).read_text())]}; "
          f"resumed from epoch {m['resumed_from_epoch']} step {m['resumed_from_step']}")
    print("  curves", curves)
for name, (m, curves) in (("often", often), ("cut", cut)):
    same = curves == whole[1] and (m["test_accuracy"], m["test_loss"]) == (
        whole[0]["test_accuracy"], whole[0]["test_loss"])
    print(f"{name} equals the uninterrupted run to the bit: {same}")
EOF
} 2>&1 | tee "$OUT/midepoch.log"
