#!/usr/bin/env bash
# On the GPU machine, through the device tool (wheels: benchmarks/gpu/fetch_wheels.sh):
#   run(command="bash benchmarks/gpu/classifier.sh", carry=[".whl"], timeout_s=300)
# A CIFAR job trained on JAX on the GPU in mixed precision (bfloat16) and in float32; its
# classifier.keras (float32) scored on the raw test images against the run's test accuracy,
# on the GPU and on the CPU, and cvtrain predict on the archive. MPS="on" runs only bfloat16.
set -u
. benchmarks/gpu/setup.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
"$py" -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__)"
"$py" -m cvtrain data synth cifar100 /tmp/c --classes 10 --train-per-class 300 --test-per-class 100 || exit 1
A=/tmp/c/cifar-100-binary.tar.gz
"$py" - <<'PY'
from cvtrain.data.cifar import load_cifar100
import numpy as np
d = load_cifar100('/tmp/c/cifar-100-binary.tar.gz', num_classes=10, progress=False)
np.save('/tmp/x.npy', d.x_test); np.save('/tmp/y.npy', d.y_test)
PY
for mp in ${MPS:-on off}; do
  echo "== dropout+augment, mixed_precision=$mp"
  t0=$SECONDS
  "$py" -m cvtrain run dropout --set data.path=$A --set data.num_classes=10 \
    --set data.augment.shift=0.1 --set data.augment.horizontal_flip=true \
    --set training.epochs=4 --set training.mixed_precision=$mp --seed 0 --out /tmp/runs --run-id $mp 2>&1 | tail -14
  echo "train+finish seconds: $((SECONDS - t0))"
  R=/tmp/runs/dropout/$mp
  "$py" -c "import json; m=json.load(open('$R/metrics.json')); print('metrics', m['test_accuracy'], m['test_loss'], m['device']['precision_policy'], m['device']['type'])"
  "$py" -c "import json; c=json.load(open('$R/classifier.json')); print('classifier.json', c['dtype_policy'], c['trained_with'])"
  "$py" -c "
import keras
m = keras.saving.load_model('$R/classifier.keras')
def pol(model):
    out = set()
    for l in model.layers:
        out.add(l.dtype_policy.name)
        if hasattr(l, 'layers'): out |= pol(l)
    return out
print('layer policies', pol(m))"
  echo "score on GPU:"; "$py" tests/score_classifier.py $R /tmp/x.npy /tmp/y.npy
  echo "score on CPU:"; JAX_PLATFORMS=cpu "$py" tests/score_classifier.py $R /tmp/x.npy /tmp/y.npy
  "$py" -m cvtrain predict $R $A --json > /tmp/p.json; echo "predict rc=$?"
  "$py" -c "import json; print('predict accuracy', json.load(open('/tmp/p.json'))['accuracy'])"
  cp $R/log.txt $OUT/log-$mp.txt; cp $R/classifier.json $OUT/classifier-$mp.json
done
