#!/usr/bin/env bash
# Time one ResNet50 feature extraction against a head job that reuses the cached features,
# on a synthetic birds set (random-init weights: no downloads), same machine, same run.
#   bash benchmarks/feature_cache.sh [CLASSES] [PER_CLASS] [IMAGE_SIZE]
set -euo pipefail
classes=${1:-10} per_class=${2:-20} size=${3:-224}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export CVTRAIN_CACHE="$work/cache"
python3 -m cvtrain data synth cub200 "$work/birds" --classes "$classes" --per-class "$per_class" \
    --image-size 128 >/dev/null
for job in resnet50_features_dense resnet50_features_mlp; do
    python3 -m cvtrain run "$job" --set data.path="$work/birds" --set model.weights=none \
        --set data.image_size="$size" --out "$work/runs" --run-id bench --seed 0 >/dev/null
    python3 - "$work/runs/$job/bench/metrics.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
f = m["dataset"]["features"]
print(f"{m['job']:<26} features {f['cache']:<4}  extraction {f['extraction_seconds']:6.1f} s"
      f"  whole run {m['wall_seconds']:6.1f} s  ({m['dataset']['train'] + m['dataset']['validation']}"
      f" train + {m['dataset']['test']} test images)")
PY
done
