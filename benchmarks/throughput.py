"""Training throughput of every CIFAR job: cvtrain's own input path against the pure-compute
ceiling on the same device and backend, and the coursework's pipeline when it is at hand.

    python benchmarks/throughput.py [--jobs augment,dropout] [--epochs 3] [--reps 3]
                                    [--backend tensorflow|jax] [--reference DIR] [--features]

For each job and repetition, interleaved, in a process of its own as ``cvtrain run`` would
be (TensorFlow's threads per op are a process's, set before its job as the set loop sets
them: ``batch_parts.configure_threads``), then the coursework's pipeline in another:

- cvtrain: the job's own streams and model as ``cvtrain run`` builds them (uint8 batches
  in a seeded order, augmentation where it runs on this backend: the ``tf.data`` threads on
  TensorFlow, the compiled step on JAX; normalisation in the step; steps per execution
  ``auto``), on 25 synthetic classes of 500 + 100 images in the official format
  (11,250 training images after the validation split);
- ceiling: the same network on prepared tensors (normalised float32 batches made before
  the timing, no augmentation, no shuffling; the job's batch sizes, its last smaller
  batch included), with the same steps per execution and the same batch split;
- coursework: ``seed_style.py`` from ``--reference`` (default ``../shared/reference``,
  TensorFlow only: ImageDataGenerator) for the jobs it can play (BaseNet and the improved
  model, with or without augmentation).

images/s = training images / training seconds, over all epochs but the first (tracing and
warm-up), no validation. Medians of ``--reps``; ratios are taken within this run only:
"ratio" is the median of each repetition's cvtrain/ceiling, the two measured one right
after the other (a slow spell of the machine hits both), and the coursework ratio is one of
medians.
``--features`` also times ResNet50 feature extraction (cvtrain's streaming extractor)
against a bare ``predict`` on the same decoded images.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: what the coursework's reference script can play for each job: (model, augment)
SEED_STYLE = {"basenet": ("basenet", False), "normalize": ("basenet", False),
              "augment": ("basenet", True), "dropout": ("improved", True)}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", default="basenet,normalize,augment,deeper,batchnorm,dropout,bonus",
                   help="comma-separated CIFAR jobs")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--backend", choices=("tensorflow", "jax"), default=None,
                   help="Keras backend [default: $KERAS_BACKEND, else tensorflow]")
    p.add_argument("--reference", type=Path, default=ROOT.parent / "shared" / "reference",
                   help="folder of seed_style.py (skipped when absent)")
    p.add_argument("--features", action="store_true",
                   help="also time ResNet50 feature extraction against a bare predict")
    p.add_argument("--jit", choices=("auto", "on", "off"), default="auto",
                   help="XLA for both columns, as training.jit_compile [default: auto, which "
                        "Keras leaves off on CPU-only TensorFlow]")
    p.add_argument("--tf-augment-in", choices=("stream", "step"), default=None,
                   help="TensorFlow: augment in the tf.data threads or in the training step "
                        "[default: cvtrain's choice, pipeline.TF_AUGMENT_IN]")
    p.add_argument("--jax-loop", choices=("scan", "steps"), default=None,
                   help="JAX: each execution as one compiled call (scan) or one call per "
                        "batch (steps, Keras's own), for both columns [default: cvtrain's "
                        "choice, training.loop.LOOP]")
    p.add_argument("--batch-split", default=None,
                   help="TensorFlow on a CPU: training.batch_split for both columns "
                        "[default: the job's, auto]")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    # internal: one repetition of one job in a process of its own (TensorFlow's threads
    # are a process's, and cvtrain sets them per job), its result as a JSON line
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--archive", type=Path, help=argparse.SUPPRESS)
    return p.parse_args()


def timed_fit(model, stream, epochs: int, steps: int, images: int) -> float:
    """images/s over all epochs but the first, training only."""
    import keras

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.t0)

    seconds: list[float] = []
    model.fit(stream, epochs=epochs, steps_per_epoch=steps, callbacks=[Timer()], verbose=0,
              shuffle=False)
    return images * (epochs - 1) / sum(seconds[1:])


def prepared_batches(x, labels, num_classes, batch_size, mean, std, epochs):
    """The ceiling's input: normalised float32 batches made before timing, on the device;
    the same batch sizes as the job's epoch, its last smaller batch included (in a graph, a
    batch dimension that varies costs BaseNet's step a few percent on a CPU: that is the
    job's compute, not its pipeline's)."""
    import keras
    import numpy as np

    n = len(x) // batch_size * batch_size
    xs = (x.astype(np.float32) / 255.0 - mean) / std
    ys = np.eye(num_classes, dtype=np.float32)[labels]
    xb = xs[:n].reshape(-1, batch_size, *x.shape[1:])
    yb = ys[:n].reshape(-1, batch_size, num_classes)
    last = [(xs[n:], ys[n:])] if n < len(x) else []
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        epoch = tf.data.Dataset.from_tensor_slices((xb, yb))
        for xl, yl in last:
            epoch = epoch.concatenate(tf.data.Dataset.from_tensors((xl, yl)))
        return epoch.repeat(epochs).prefetch(2), len(xb) + len(last)
    # host arrays, as cvtrain's own stream yields them: both columns then cross to the
    # device the same way (Keras's JAX iterator puts each batch there one ahead), and
    # differ only in the pipeline's work. (Batches put on the GPU up front measured 3.7x
    # slower than cvtrain's pipeline on an H200, cause not established.)
    batches = list(zip(xb, yb, strict=True)) + last

    def stream():
        for _ in range(epochs):
            yield from batches

    return stream(), len(xb)


def measure_job(job: str, archive: Path, epochs: int, backend: str, jit="auto",
                batch_split=None) -> dict:
    """One repetition of one job: cvtrain's pipeline, then the ceiling (in a process of its
    own: TensorFlow's threads are set once per process, as for ``cvtrain run``)."""
    from cvtrain.data.cifar import load_cifar100
    from cvtrain.spec import input_kind, load_spec
    from cvtrain.training.batch_parts import configure_threads
    from cvtrain.training.device import configure_device

    spec = load_spec(ROOT / "jobs" / "cifar" / f"{job}.yaml",
                     ["data.num_classes=25", f"training.epochs={epochs}"]
                     + ([f"training.batch_split={batch_split}"] if batch_split else []))
    # TensorFlow's threads per op, as the set loop sets them before a job; unseeded: as fast
    configure_threads([spec])
    device = configure_device(spec, 0, backend)
    import keras
    import numpy as np

    from cvtrain.data.registry import get_dataset
    from cvtrain.models import build_model
    from cvtrain.training.device import steps_per_execution
    from cvtrain.training.loop import chosen_loop, scan_steps
    from cvtrain.training.parts_model import in_parts
    from cvtrain.training.run import build_optimizer

    data = load_cifar100(archive, num_classes=25, progress=False)
    dataset = get_dataset(spec.data.dataset)
    splits = dataset.streams(spec, data, input_kind(spec), 0, None, 0)
    spe = steps_per_execution("auto", splits.steps_per_epoch, device["type"])
    t = spec.training

    def compiled(model):
        model = in_parts(model, device["batch_split"])
        model.compile(optimizer=build_optimizer(spec), loss="categorical_crossentropy",
                      metrics=["accuracy"], steps_per_execution=spe,
                      jit_compile={"auto": "auto", "on": True, "off": False}[jit])
        if backend == "jax" and chosen_loop(device["type"]) == "scan":
            scan_steps(model)
        return model

    ours = timed_fit(compiled(splits.wrap(build_model(spec.model, splits.input_shape, 25))),
                     splits.train, epochs, splits.steps_per_epoch, splits.train_size)
    norm = splits.details["normalization"]
    mean, std = np.array(norm["mean"], np.float32), np.array(norm["std"], np.float32)
    n_train = splits.train_size
    stream, steps = prepared_batches(data.x_train[:n_train], data.y_train[:n_train], 25,
                                     t.batch_size, mean, std, epochs)
    ceiling = timed_fit(compiled(build_model(spec.model, splits.input_shape, 25)), stream,
                        epochs, steps, n_train)
    keras.backend.clear_session()
    return {"cvtrain": ours, "ceiling": ceiling, "steps_per_execution": spe,
            "device": device["type"], "policy": device["precision_policy"],
            "batch_split": device["batch_split"]}


def measure_apart(args, job: str, archive: Path) -> dict:
    """:func:`measure_job` in a child process."""
    argv = [sys.executable, __file__, "--one", job, "--archive", str(archive),
            "--epochs", str(args.epochs), "--backend", args.backend, "--jit", args.jit]
    for flag, value in (("--tf-augment-in", args.tf_augment_in),
                        ("--jax-loop", args.jax_loop), ("--batch-split", args.batch_split)):
        if value:
            argv += [flag, value]
    done = subprocess.run(argv, capture_output=True, text=True)
    for line in done.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return json.loads(line)
    sys.exit(f"{job}: the measuring process failed (exit {done.returncode}):\n"
             f"{done.stderr.strip()[-3000:]}")


def seed_style(reference: Path, job: str, epochs: int) -> float | None:
    if job not in SEED_STYLE or not (reference / "seed_style.py").is_file():
        return None
    model, augment = SEED_STYLE[job]
    done = subprocess.run(
        [sys.executable, "seed_style.py", "--model", model,
         "--augment" if augment else "--no-augment", "--epochs", str(epochs), "--json"],
        cwd=reference, capture_output=True, text=True,
        env={**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"})
    for line in done.stdout.splitlines()[::-1]:
        if line.startswith("{"):
            return float(json.loads(line)["images_per_second"])
    print(f"  seed_style.py failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    return None


def features(backend: str, reps: int) -> dict:
    """ResNet50 (random weights) feature maps of 96 synthetic 224 px JPEGs: cvtrain's
    streaming extractor against a bare predict on the same images decoded beforehand."""
    import numpy as np
    import tensorflow as tf

    from cvtrain.data.birds import load_cub200, write_synthetic_cub200
    from cvtrain.data.birds.features import extract
    from cvtrain.data.birds.images import load_image
    from cvtrain.models.resnet import FineTuneOptions, build_backbone

    folder = Path(tempfile.mkdtemp(prefix="cvtrain-bench-birds-"))
    birds = load_cub200(write_synthetic_cub200(folder, classes=4, per_class=48,
                                               image_size=224, seed=1))
    files = birds.train_files + birds.test_files
    backbone = build_backbone(FineTuneOptions(name="resnet50_finetune", weights="none"), 224,
                              pooling=None)
    images = np.stack([load_image(tf, f, 224).numpy() for f in files])
    ours, bare = [], []
    extract(backbone, files[:32], 224)  # warm-up: tracing
    backbone.predict(images[:32], batch_size=32, verbose=0)
    for _ in range(reps):
        t0 = time.perf_counter()
        extract(backbone, files, 224)
        ours.append(len(files) / (time.perf_counter() - t0))
        t0 = time.perf_counter()
        backbone.predict(images, batch_size=32, verbose=0)
        bare.append(len(files) / (time.perf_counter() - t0))
    return {"images": len(files), "cvtrain": statistics.median(ours),
            "bare_predict": statistics.median(bare)}


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from cvtrain.training.backend import select_backend

    backend = select_backend(args.backend or "auto")
    args.backend = backend
    from cvtrain.training.loop import LOOP_ENV

    if args.jax_loop:
        os.environ[LOOP_ENV] = args.jax_loop
    if args.one:
        if args.tf_augment_in:
            from cvtrain.data import pipeline

            pipeline.TF_AUGMENT_IN = args.tf_augment_in
        print(json.dumps(measure_job(args.one, args.archive, args.epochs, backend, args.jit,
                                     args.batch_split)), flush=True)
        return
    from cvtrain.data.cifar import write_synthetic_cifar100

    folder = Path(tempfile.mkdtemp(prefix="cvtrain-bench-"))
    archive = write_synthetic_cifar100(folder, classes=25, train_per_class=500,
                                       test_per_class=100, seed=0)
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    reference = args.reference if backend == "tensorflow" else Path("/nonexistent")
    loop = f" ({os.environ.get(LOOP_ENV) or 'loop: cvtrain default'})" if backend == "jax" else ""
    print(f"backend {backend}{loop}; {os.cpu_count()} CPUs; {args.epochs} epochs (first excluded), "
          f"median of {args.reps}; 11,250 training images, batch 32", flush=True)
    results = {}
    for job in jobs:
        runs = {"cvtrain": [], "ceiling": [], "coursework": []}
        for _ in range(args.reps):  # interleaved: a slow spell hits every column alike
            r = measure_apart(args, job, archive)
            runs["cvtrain"].append(r["cvtrain"])
            runs["ceiling"].append(r["ceiling"])
            if (s := seed_style(reference, job, args.epochs)) is not None:
                runs["coursework"].append(s)
        med = {k: statistics.median(v) if v else None for k, v in runs.items()}
        paired = statistics.median(a / b for a, b in zip(runs["cvtrain"], runs["ceiling"],
                                                         strict=True))
        results[job] = {**med, "ratio": paired, "runs": runs,
                        "steps_per_execution": r["steps_per_execution"],
                        "device": r["device"], "policy": r["policy"],
                        "batch_split": r["batch_split"]}
        line = (f"{job:<10} cvtrain {med['cvtrain']:8,.0f}  ceiling {med['ceiling']:8,.0f}  "
                f"ratio {paired:5.2f}")
        if med["coursework"]:
            line += (f"   coursework {med['coursework']:7,.0f}  "
                     f"cvtrain/coursework {med['cvtrain'] / med['coursework']:5.2f}x")
        split = f", batch in {r['batch_split']} parts" if r["batch_split"] > 1 else ""
        print(f"{line}   (spe {r['steps_per_execution']}, {r['device']}, {r['policy']}{split})",
              flush=True)
    if args.features:
        f = features(backend, args.reps)
        results["features"] = f
        print(f"features   cvtrain {f['cvtrain']:8,.1f}  bare predict {f['bare_predict']:8,.1f}  "
              f"ratio {f['cvtrain'] / f['bare_predict']:5.2f}   (ResNet50, {f['images']} "
              "images at 224 px)", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"backend": backend, "epochs": args.epochs,
                                         "reps": args.reps, "results": results}, indent=2))


if __name__ == "__main__":
    main()
