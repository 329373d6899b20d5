#!/usr/bin/env bash
# Every job under jobs/ with `cvtrain run` on the GPU machine (issue 27, item 5), through the
# device tool, from the repository root, after `bash benchmarks/gpu/fetch_wheels.sh` here:
#   run(command="bash benchmarks/gpu/jobs.sh", carry=[".whl"], timeout_s=600)
# The image's pinned versions (docker/requirements.txt) of Keras and cvtrain's dependencies
# come in .whl/; JAX, jaxlib, its CUDA plugin and numpy stay the machine's (a table of lock
# against installed versions says which differ). Synthetic data at the real sizes: CIFAR 25
# classes (11,250 train + 1,250 validation + 2,500 test images) and birds, 100 classes x 60
# JPEGs at 224 px (6,000: 2,700 train + 300 validation + 3,000 test; the real 2010 set has
# 6,033 in 200 classes, the synthesiser makes at most 100). ImageNet weights cannot be
# downloaded there: the birds jobs train from random weights, --set cub200:model.weights=none.
# For each job, in $OUT/jobs.json and $OUT/jobs.log: the wall time of the whole process,
# the seconds of every epoch (history.csv: training + validation), compile seconds (no run
# field records them: the first epoch minus the median of the later ones), metrics.json's
# wall/fit seconds, device, precision policy, steps per execution, test accuracy, and for
# feature jobs the extraction seconds (ResNet50's forward pass, compiling included). The
# float32 classifier.keras of a CIFAR run (SCORE_JOB, default dropout: bfloat16 on a GPU
# with bfloat16) is scored on the raw test images by tests/score_classifier.py against the
# run's test accuracy. JAX's compilation cache starts empty (CVTRAIN_CACHE in a fresh
# folder); earlystop, the dropout job's model, then reuses the dropout job's programs.
#
# Defaults and budget. Compiling, not epochs, is most of each job: on the H200
# (benchmarks/README.md) 13-47 s a CIFAR job against 0.3-0.5 s an epoch, 28-65 s wall a
# 3-epoch job, earlystop 55 s whole. Hence CIFAR_EPOCHS=3 (the first compiles, two more
# give the steady epoch), EARLYSTOP_EPOCHS=30 (on synthetic data it stops at about epoch 17
# anyway: the whole job, ~7 s of epochs), BIRDS_EPOCHS=2 (one steady epoch; a fine-tuning
# epoch is ~1 s of GPU at 2,743 images/s, bounded by JPEG decoding). Expected on an H100:
# setup ~30 s, the CIFAR jobs ~6.5 min, the birds ~1 min each for the feature heads (the
# extraction's compile), ~2 min for the convolutional head and ~3 min for fine-tuning (a
# ResNet50 training step to compile): ~13 min in all, more than one 10-minute call. So
# the script keeps to BUDGET_S (default 540 s from its start): a job whose estimate (the
# table below) no longer fits is skipped and listed, with the JOBS=... that runs the rest
# in a later call. JOBS picks jobs, folders under jobs/ or datasets (default: every job of
# `cvtrain jobs list`, in its order: CIFAR as the coursework builds them, then the birds),
# e.g. JOBS=birds, JOBS="birds cifar" (in that order), JOBS="dropout resnet50_finetune".
# Each job has its own `timeout`. The data and run folders go at the end unless KEEP=1.
#
# SMOKE=1 runs the same steps tiny (3 classes, 97 px birds: the smallest the convolutional
# head takes, 2 epochs) on a CPU, skipping nothing unless BUDGET_S is given:
#   SMOKE=1 OUT=/tmp/out-jobs bash benchmarks/gpu/jobs.sh
# NO_TENSORFLOW=1 hides TensorFlow from every Python it starts (as the GPU machine lacks it).
set -uo pipefail
. benchmarks/gpu/setup.sh
smoke="${SMOKE:-}"
t0=0  # the budget and the section times count from the script's start (wheels included)
log="$OUT/jobs.log"
work=$(mktemp -d)
[ -n "${KEEP:-}" ] || trap 'rm -rf "$work"' EXIT  # KEEP=1 keeps the data and run folders
export CVTRAIN_CACHE="$work/cache"  # empty: compilation cache, birds features
mkdir -p "$OUT/jobs"
# tests/no_tensorflow/sitecustomize.py makes `import tensorflow` fail
[ -z "${NO_TENSORFLOW:-}" ] || export PYTHONPATH="$PWD/tests/no_tensorflow:$PYTHONPATH"
if [ -n "$smoke" ]; then
  cifar=(--classes 3 --train-per-class 40 --test-per-class 10); classes=3
  birds=(--classes 3 --per-class 8 --image-size 97); birds_px=97
  budget="${BUDGET_S:-900}"; cifar_epochs="${CIFAR_EPOCHS:-2}"
  early_epochs="${EARLYSTOP_EPOCHS:-2}"; birds_epochs="${BIRDS_EPOCHS:-2}"
else
  cifar=(--classes 25 --train-per-class 500 --test-per-class 100); classes=25
  birds=(--classes 100 --per-class 60 --image-size 224); birds_px=224
  budget="${BUDGET_S:-540}"; cifar_epochs="${CIFAR_EPOCHS:-3}"
  early_epochs="${EARLYSTOP_EPOCHS:-30}"; birds_epochs="${BIRDS_EPOCHS:-2}"
fi
score_job="${SCORE_JOB:-dropout}"
# seconds a job is expected to take on an H100 (wall, compiling included): it is started
# only while that much of the budget is left; its `timeout` is twice that (within budget)
declare -A need=([basenet]=35 [normalize]=35 [augment]=35 [deeper]=60 [batchnorm]=60
  [dropout]=60 [earlystop]=45 [bonus]=80 [resnet50_features_dense]=75
  [resnet50_features_mlp]=60 [resnet50_maps_convhead]=120 [resnet50_finetune]=180)
helper="$work/helper.py"
cat > "$helper" <<'PY'
"""jobs.sh's Python: versions, one job's record, the classifier check, the summary."""
import json, math, os, statistics, sys
from pathlib import Path

work = Path(os.environ["JOBS_WORK"])


def versions(lock_path, site):
    from importlib import metadata
    lock = {}
    if Path(lock_path).is_file():
        for line in Path(lock_path).read_text().splitlines():
            pin = line.split("#")[0].split(";")[0].strip()
            if "==" in pin:
                name, version = pin.split("==", 1)
                lock[name.strip().lower().replace("_", "-")] = version.strip()
    names = ["keras", "jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda12-pjrt", "numpy",
             "ml-dtypes", "scipy", "h5py", "optree", "tensorboard", "protobuf", "matplotlib",
             "pillow", "typer", "rich", "pyyaml", "pydantic", "pydantic-core", "boto3",
             "obstore", "filelock"]
    seen = {d.metadata["Name"].lower().replace("_", "-") for d in metadata.distributions()}
    names += sorted(n for n in seen if n.startswith("jax-cuda") and n not in names)
    rows = []
    for name in names:
        try:
            dist = metadata.distribution(name)
            have = dist.version
            where = "carried" if site and str(dist.locate_file("")).startswith(site) else "machine"
        except metadata.PackageNotFoundError:
            have, where = None, "-"
        want = lock.get(name)
        if want is None and have is None:
            continue
        state = "same" if have == want else ("MISSING" if have is None else
                                             "not in lock" if want is None else "DIFFERS")
        rows.append({"package": name, "lock": want, "installed": have, "from": where,
                     "state": state})
    print(f"{'package':<20} {'lock':<12} {'installed':<12} {'from':<8} state")
    for r in rows:
        print(f"{r['package']:<20} {r['lock'] or '-':<12} {r['installed'] or '-':<12} "
              f"{r['from']:<8} {r['state']}")
    (work / "versions.json").write_text(json.dumps(rows))


def record(job, status, rc, wall, limit, run, out):
    run, rec = Path(run), {"job": job, "status": status, "rc": int(rc), "limit_s": int(limit),
                           "wall_s": round(float(wall), 1)}
    history, metrics = run / "history.csv", run / "metrics.json"
    if history.is_file():
        lines = history.read_text().splitlines()
        head = lines[0].split(",")
        col = head.index("seconds")
        secs = [float(line.split(",")[col]) for line in lines[1:] if line.strip()]
        rec["epoch_s"] = secs
        if len(secs) >= 2:
            later = statistics.median(secs[1:])
            rec["steady_epoch_s"] = round(later, 3)
            rec["compile_s"] = round(secs[0] - later, 1)
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        d, ds = m.get("device", {}), m.get("dataset", {})
        rec.update({k: m.get(k) for k in ("test_accuracy", "test_loss", "epochs_run",
                                          "wall_seconds", "fit_seconds",
                                          "train_images_per_second")})
        rec["device"] = {k: d.get(k) for k in ("type", "gpus", "precision_policy",
                                               "steps_per_execution", "global_batch")}
        rec["data"] = {k: ds.get(k) for k in ("name", "train", "validation", "test", "classes")}
        if ds.get("features"):
            rec["features"] = {k: ds["features"].get(k)
                               for k in ("kind", "cache", "extraction_seconds")}
        rec["versions"] = m.get("versions")
        rec["run"] = str(run)
    if status != "ok":
        text = Path(out).read_text(errors="replace").strip().splitlines() if Path(out).is_file() else []
        rec["tail"] = text[-6:]
    with open(work / "records.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    dev = rec.get("device", {})
    line = (f"{job}: {status}, {rec['wall_s']:.1f} s wall")
    if rec.get("epoch_s"):
        line += "; epochs " + " ".join(f"{s:g}" for s in rec["epoch_s"])
    if "compile_s" in rec:
        line += f"; compile ~{rec['compile_s']} s, steady epoch {rec['steady_epoch_s']} s"
    if "features" in rec:
        f = rec["features"]
        line += f"; features {f['kind']} {f['cache']}, extraction {f['extraction_seconds']} s"
    if "test_accuracy" in rec:
        line += (f"; fit {rec['fit_seconds']} s, run {rec['wall_seconds']} s; "
                 f"{dev.get('type')} {dev.get('precision_policy')} "
                 f"spe {dev.get('steps_per_execution')}; test acc {rec['test_accuracy']:.4f}")
    print(line)
    for t in rec.get("tail", []):
        print("    " + t)


def score(run, result):
    m = json.loads((Path(run) / "metrics.json").read_text())
    c = json.loads((Path(run) / "classifier.json").read_text())
    got = json.loads(Path(result).read_text().strip().splitlines()[-1])
    n = m["dataset"]["test"]
    diff = got["accuracy"] - m["test_accuracy"]
    images = round(abs(diff) * n)
    verdict = ("matches exactly" if images == 0 else
               f"matches within 0.5 % ({images} of {n} images)" if abs(diff) <= 0.005 else
               f"DIFFERS by {images} of {n} images")
    out = {"run": str(run), "job": m["job"], "precision_policy": m["device"]["precision_policy"],
           "classifier_dtype_policy": c.get("dtype_policy"),
           "run_test_accuracy": m["test_accuracy"], "run_test_loss": m["test_loss"],
           "classifier_accuracy": got["accuracy"], "classifier_loss": got["loss"],
           "classifier_backend": got["backend"], "cvtrain_imported": got["cvtrain_imported"],
           "test_images": n, "differing_images": images, "verdict": verdict}
    (work / "score.json").write_text(json.dumps(out))
    print(f"{m['job']} trained in {out['precision_policy']}; classifier.keras "
          f"({out['classifier_dtype_policy']}) on the {n} raw test images: accuracy "
          f"{got['accuracy']:.4f} (loss {got['loss']:.4f}) against the run's "
          f"{m['test_accuracy']:.4f} (loss {m['test_loss']:.4f}): {verdict}")


def summary(dest, settings, skipped):
    def load(name):
        p = work / name
        return json.loads(p.read_text()) if p.is_file() else None
    recs = [json.loads(x) for x in (work / "records.jsonl").read_text().splitlines()] \
        if (work / "records.jsonl").is_file() else []
    gpu = (work / "gpu.txt").read_text().strip().splitlines() if (work / "gpu.txt").is_file() else []
    doc = {"script": "benchmarks/gpu/jobs.sh", "settings": json.loads(settings), "gpu": gpu,
           "versions": load("versions.json"), "jobs": recs, "classifier_check": load("score.json"),
           "skipped": skipped.split()}
    Path(dest).write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{'job':<24} {'status':<9} {'wall s':>7} {'compile s':>9} {'epoch s':>8} "
          f"{'test acc':>8}  precision")
    for r in recs:
        def fmt(v, f):
            return format(v, f) if isinstance(v, (int, float)) else format("-", f[0] + "s")
        print(f"{r['job']:<24} {r['status']:<9} {fmt(r['wall_s'], '7.1f')} "
              f"{fmt(r.get('compile_s'), '9.1f')} {fmt(r.get('steady_epoch_s'), '8.3f')} "
              f"{fmt(r.get('test_accuracy'), '8.4f')}  "
              f"{r.get('device', {}).get('precision_policy', '-')}")


if __name__ == "__main__":
    {"versions": versions, "record": record, "score": score, "summary": summary}[sys.argv[1]](*sys.argv[2:])
PY
export JOBS_WORK="$work"
helper() { "$py" "$helper" "$@"; }
section() { echo "== [$((SECONDS - t0)) s] $*"; }
now() { date +%s.%N; }
{
  section "GPU, versions (lock: docker/requirements.txt)"
  { nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader \
      2>/dev/null || echo "no nvidia-smi: no NVIDIA GPU"; } | tee "$work/gpu.txt"
  timeout 60 "$py" -c "import jax; print('jax devices:', jax.devices())" 2>&1 | tail -1 \
      | tee -a "$work/gpu.txt"
  helper versions docker/requirements.txt "${site:-}"
  python_has_tf=$("$py" -c "import importlib.util as u
try: print(u.find_spec('tensorflow') is not None)
except ImportError: print(False)")
  echo "TensorFlow importable: $python_has_tf; KERAS_BACKEND=$KERAS_BACKEND"

  section "data: CIFAR ${cifar[*]}; birds ${birds[*]} (in the background)"
  data="$work/data"
  "$py" -m cvtrain data synth cub200 "$data/birds" "${birds[@]}" >"$work/birds-synth.txt" 2>&1 &
  birds_pid=$!
  timeout 120 "$py" -m cvtrain data synth cifar100 "$data/cifar" "${cifar[@]}" >/dev/null \
      || { echo "CIFAR synthesis failed"; exit 1; }
  tar="$data/cifar/cifar-100-binary.tar.gz"
  timeout 120 "$py" - "$tar" "$classes" "$work" <<'PY' || echo "saving the test images failed"
import sys
import numpy as np
from cvtrain.data.cifar import load_cifar100
d = load_cifar100(sys.argv[1], num_classes=int(sys.argv[2]), progress=False)
np.save(f"{sys.argv[3]}/x_test.npy", d.x_test); np.save(f"{sys.argv[3]}/y_test.npy", d.y_test)
print(f"CIFAR test images for the classifier check: {d.x_test.shape} {d.x_test.dtype}")
PY
  birds_ok=""

  # the jobs: every job of `cvtrain jobs list` (its order: CIFAR as the coursework builds
  # them, dropout before earlystop, then the birds), or those JOBS names: a job, a folder
  # under jobs/ or a dataset
  mapfile -t listed < <("$py" -m cvtrain jobs list --json | "$py" -c "import json, sys
for j in json.load(sys.stdin): print(j['job'], j['dataset'], j['path'])")
  declare -A dataset_of=()
  picked=()
  for line in "${listed[@]}"; do
    read -r n d p <<<"$line"; dataset_of[$n]=$d
    [ -n "${JOBS:-}" ] || picked+=("$n")
  done
  for w in ${JOBS:-}; do  # in the order of JOBS, each word's jobs in the list's order
    hit=""
    for line in "${listed[@]}"; do
      read -r n d p <<<"$line"
      if [ "$w" = "$n" ] || [ "$w" = "$d" ] || [[ $p == jobs/$w/* ]]; then
        hit=1; [[ " ${picked[*]} " == *" $n "* ]] || picked+=("$n")
      fi
    done
    [ -n "$hit" ] || echo "JOBS: $w is no job, folder or dataset of \`cvtrain jobs list\`"
  done
  cifar_sets=(--set "data.path=$tar")
  [ -n "$smoke" ] && cifar_sets+=(--set "data.num_classes=$classes")
  birds_sets=(--set "data.path=$data/birds" --set model.weights=none
              --set "data.image_size=$birds_px" --set "training.epochs=$birds_epochs")
  echo "jobs: ${picked[*]}"
  echo "ImageNet weights cannot be downloaded here: birds jobs train from random weights" \
       "(--set cub200:model.weights=none); epochs: CIFAR $cifar_epochs, earlystop" \
       "$early_epochs, birds $birds_epochs; budget $budget s"
  settings=$("$py" -c "import json, sys; print(json.dumps(dict(zip(sys.argv[1::2], sys.argv[2::2]))))" \
    smoke "${smoke:-0}" cifar "${cifar[*]}" birds "${birds[*]}" cifar_epochs "$cifar_epochs" \
    earlystop_epochs "$early_epochs" birds_epochs "$birds_epochs" budget_s "$budget" \
    birds_weights none score_job "$score_job" jobs "${picked[*]}" \
    tensorflow_importable "$python_has_tf" jax_cache "fresh: $CVTRAIN_CACHE")

  skipped=(); scored=""; runs="$work/runs"
  score() {  # score RUN: its classifier.keras on the raw CIFAR test images
    local limit=$((budget - SECONDS - 15)); [ "$limit" -gt 180 ] && limit=180
    section "classifier check: $1 (timeout $limit s)"
    if [ "$limit" -gt 0 ] && timeout "$limit" "$py" tests/score_classifier.py "$1" "$work/x_test.npy" "$work/y_test.npy" \
        >"$work/score.txt" 2>"$work/score.err"; then
      helper score "$1" "$work/score.txt" && scored=1
    else
      echo "scoring failed:"; tail -5 "$work/score.err"
    fi
  }
  for job in "${picked[@]}"; do
    case ${dataset_of[$job]} in
      cifar100) sets=("${cifar_sets[@]}" --set "training.epochs=$cifar_epochs")
                [ "$job" = earlystop ] && sets=("${cifar_sets[@]}" --set "training.epochs=$early_epochs");;
      cub200) sets=("${birds_sets[@]}");;
      *) echo "$job: dataset ${dataset_of[$job]}, no data for it here: its own settings"; sets=();;
    esac
    if [ "${dataset_of[$job]}" = cub200 ] && [ -z "$birds_ok" ]; then
      if wait "$birds_pid"; then birds_ok=1
      else echo "birds synthesis failed:"; tail -5 "$work/birds-synth.txt"; fi
      echo "birds: $(find "$data/birds" -name '*.jpg' | wc -l) JPEGs"
    fi
    est=${need[$job]:-90}
    left=$((budget - SECONDS - 15))
    if { [ -z "$smoke" ] || [ -n "${BUDGET_S:-}" ]; } && [ "$left" -lt "$est" ]; then
      echo "$job: skipped, ${left} s of the budget left, expected ${est} s"
      skipped+=("$job"); continue
    fi
    limit=$((2 * est)); [ -n "$smoke" ] && limit=300
    [ "$limit" -gt "$left" ] && limit=$left
    section "$job (timeout $limit s)"
    out="$OUT/jobs/$job.txt"
    start=$(now)
    timeout -k 10 "$limit" "$py" -m cvtrain run "$job" "${sets[@]}" \
        --out "$runs" --run-id jobs >"$out" 2>&1
    rc=$?
    wall=$(awk "BEGIN { print $(now) - $start }")
    case $rc in 0) status=ok;; 124|137) status=timeout;; *) status=failed;; esac
    helper record "$job" "$status" "$rc" "$wall" "$limit" "$runs/$job/jobs" "$out"
    if [ "$job" = "$score_job" ] && [ "$rc" = 0 ]; then score "$runs/$job/jobs"; fi
  done
  if [ -z "$scored" ]; then  # the score job did not run: any CIFAR run that did
    for r in "$runs"/*/jobs; do
      [ -f "$r/classifier.keras" ] && grep -q cifar100 "$r/metrics.json" && { score "$r"; break; }
    done
  fi
  [ -n "$scored" ] || echo "classifier check: no CIFAR run to score"

  section "summary ($OUT/jobs.json)"
  helper summary "$OUT/jobs.json" "$settings" "${skipped[*]}"
  [ ${#skipped[@]} -eq 0 ] || echo "skipped for the budget; the rest in another call:" \
      "run(command=\"JOBS='${skipped[*]}' bash benchmarks/gpu/jobs.sh\", carry=[\".whl\"], timeout_s=600)"
  section "done"
} 2>&1 | tee "$log"
