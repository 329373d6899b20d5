"""BaseNet + augment on TensorFlow: cvtrain's augmented ``tf.data`` stream against variants of
it, trained in one process, alternating; and the resampling alone, one thread.

    python benchmarks/augment_ab.py [--variants now,affine,chunk4,autotune,ceiling]
                                    [--rounds 8] [--epochs 3]
    python benchmarks/augment_ab.py --resample [--reps 5]
    python benchmarks/augment_ab.py --stream [--variants now,affine,chunk4] [--rounds 4]

Variants (each built as ``cvtrain run`` builds the augment job, 25 synthetic classes,
11,250 training images, batch 32, steps per execution ``auto``):

- now: the stream as cvtrain builds it (shift, zoom and flip compiled by XLA);
- affine: shift, zoom and flip by ``keras.ops.image.affine_transform``
  (``ImageProjectiveTransformV3``, one pass, what rotation and shear take) instead;
- chunk4: chunks of 4 batches (128 images), as before chunks of 16;
- autotune: ``tf.data``'s autotuning left on;
- ceiling: the same network on prepared tensors (``throughput.py``'s ceiling).

images/s over the epochs but the first; each variant's figure is the median over rounds,
and its ratio to ``now`` the median of the rounds' ratios (a slow spell of the machine
hits both). Variants run in a rotating order each round. ``--resample``: microseconds an
image for the augmentation of chunks of 512 images drawn from the training set, on one
thread, each way in a ``tf.function`` as the stream calls it (``tfstream.resample``):
XLA and ``affine_transform``, medians of ``--reps``. (At 0651682 this script also
compared numba's loop and the ``tf.data`` ops that XLA replaced.)
``--stream``: the training stream alone (no model), each epoch's wait for its first batch
(the epoch's augmentation, made before it is handed on) and the process's CPU time in it,
epochs but the first, medians over rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

VARIANTS = ("now", "affine", "chunk4", "autotune", "ceiling")
OPTIONS = {"shift": 0.1, "zoom": 0.1, "horizontal_flip": True, "rotation": 0.0,
           "shear": 0.0, "fill_mode": "nearest"}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="now,affine,chunk4,autotune,ceiling")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--resample", action="store_true", help="time the resampling alone")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--stream", action="store_true",
                   help="time the stream's augmentation of each epoch, no model")
    args = p.parse_args()
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown or "now" not in args.variants:
        p.error(f"--variants: expected 'now' and any of {', '.join(VARIANTS)}")
    return args


def resample(reps: int) -> None:
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from cvtrain.data import tfstream
    from cvtrain.data.augment import NUM_DRAWS

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (11250, 32, 32, 3), dtype=np.uint8)
    index = tf.constant(np.sort(rng.permutation(len(images))[:512]).astype(np.int32))
    draws = tf.constant(rng.uniform(-1, 1, (512, NUM_DRAWS)).astype(np.float32))
    stored = tf.constant(images)

    calls, way = {}, tfstream.RESAMPLER
    for name in ("xla", "affine"):  # each traced, so its way fixed, before the next
        tfstream.RESAMPLER = name
        calls[name] = tf.function(lambda i, d: tfstream.resample(tf, i, d, OPTIONS, stored))
        calls[name](index, draws)
    tfstream.RESAMPLER = way
    want = calls["xla"](index, draws)
    for name, call in calls.items():
        np.testing.assert_allclose(call(index, draws), want, atol=1e-3, err_msg=name)
    times = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            t0 = time.perf_counter()
            for _ in range(20):
                call(index, draws)
            times[name].append((time.perf_counter() - t0) / 20 / 512 * 1e6)
    us = {name: statistics.median(t) for name, t in times.items()}
    for name, value in us.items():
        print(f"{name:<7} {value:6.2f} us an image  /xla {value / us['xla']:5.2f}x   "
              "(chunks of 512, one thread)")


def stream(args) -> None:
    import numpy as np
    import tensorflow as tf

    from cvtrain.data import tfstream

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (11250, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 25, len(x))
    chunk = tfstream.AUGMENT_CHUNK
    waits = {v: [] for v in args.variants if v != "ceiling"}
    for _ in range(args.rounds):
        for variant in waits:
            tfstream.AUGMENT_CHUNK = 4 if variant == "chunk4" else chunk
            tfstream.RESAMPLER = "affine" if variant == "affine" else "xla"
            batches = tfstream.tf_train_stream(x, y, 25, 32, args.epochs + 1, 1, 0,
                                               augment=dict(OPTIONS))
            if variant == "autotune":
                options = tf.data.Options()
                options.autotune.enabled = True
                batches = batches.with_options(options)
            it = iter(batches)
            for epoch in range(args.epochs + 1):
                t0, c0 = time.perf_counter(), time.process_time()
                next(it)
                if epoch:
                    waits[variant].append((time.perf_counter() - t0,
                                           time.process_time() - c0))
                for _ in range(-(-len(x) // 32) - 1):
                    next(it)
    tfstream.AUGMENT_CHUNK, tfstream.RESAMPLER = chunk, "xla"
    print(f"the stream alone, 11,250 images of 32x32, batch 32, {os.cpu_count()} CPUs; "
          f"the wait for each epoch's first batch, medians of {len(waits['now'])} epochs")
    for variant, w in waits.items():
        print(f"{variant:<9} {statistics.median(a for a, _ in w) * 1000:6.1f} ms wall "
              f"{statistics.median(c for _, c in w) * 1000:6.1f} ms CPU")


def train(args) -> None:
    import numpy as np
    import throughput

    from cvtrain.data.cifar import load_cifar100, write_synthetic_cifar100
    from cvtrain.spec import input_kind, load_spec
    from cvtrain.training.backend import select_backend
    from cvtrain.training.batch_parts import configure_threads
    from cvtrain.training.device import configure_device

    backend = select_backend("tensorflow")
    spec = load_spec(throughput.ROOT / "jobs" / "cifar" / "augment.yaml",
                     ["data.num_classes=25", f"training.epochs={args.epochs}"])
    configure_threads([spec])  # TensorFlow's threads per op, as cvtrain run sets them
    device = configure_device(spec, 0, backend)
    import keras
    import tensorflow as tf

    from cvtrain.data import tfstream
    from cvtrain.data.registry import get_dataset
    from cvtrain.models import build_model
    from cvtrain.training.device import steps_per_execution
    from cvtrain.training.parts_model import in_parts
    from cvtrain.training.run import build_optimizer

    folder = Path(tempfile.mkdtemp(prefix="cvtrain-bench-"))
    data = load_cifar100(write_synthetic_cifar100(folder, classes=25, train_per_class=500,
                                                  test_per_class=100, seed=0),
                         num_classes=25, progress=False)
    dataset = get_dataset(spec.data.dataset)
    chunk = tfstream.AUGMENT_CHUNK

    def compiled(model, spe):
        model = in_parts(model, device["batch_split"])
        model.compile(optimizer=build_optimizer(spec), loss="categorical_crossentropy",
                      metrics=["accuracy"], steps_per_execution=spe)
        return model

    def measure(variant: str) -> float:
        tfstream.AUGMENT_CHUNK = 4 if variant == "chunk4" else chunk
        tfstream.RESAMPLER = "affine" if variant == "affine" else "xla"
        splits = dataset.streams(spec, data, input_kind(spec), 0, None, 0)
        spe = steps_per_execution("auto", splits.steps_per_epoch, device["type"])
        n = splits.train_size
        if variant == "ceiling":
            norm = splits.details["normalization"]
            stream, steps = throughput.prepared_batches(
                data.x_train[:n], data.y_train[:n], 25, spec.training.batch_size,
                np.array(norm["mean"], np.float32), np.array(norm["std"], np.float32),
                args.epochs)
            model = build_model(spec.model, splits.input_shape, 25)
        else:
            stream, steps = splits.train, splits.steps_per_epoch
            if variant == "autotune":
                options = tf.data.Options()
                options.autotune.enabled = True
                stream = stream.with_options(options)
            model = splits.wrap(build_model(spec.model, splits.input_shape, 25))
        speed = throughput.timed_fit(compiled(model, spe), stream, args.epochs, steps, n)
        keras.backend.clear_session()
        return speed

    print(f"BaseNet + augment, {os.cpu_count()} CPUs, {args.epochs} epochs (first excluded), "
          f"{args.rounds} rounds; images/s", flush=True)
    runs = {v: [] for v in args.variants}
    for r in range(args.rounds):
        order = args.variants[r % len(args.variants):] + args.variants[:r % len(args.variants)]
        for variant in order:
            runs[variant].append(measure(variant))
        print(f"round {r + 1}: " + "  ".join(f"{v} {runs[v][-1]:,.0f}" for v in args.variants),
              flush=True)
    tfstream.AUGMENT_CHUNK, tfstream.RESAMPLER = chunk, "xla"
    for variant in args.variants:
        ratio = statistics.median(a / b for a, b in zip(runs[variant], runs["now"], strict=True))
        print(f"{variant:<9} {statistics.median(runs[variant]):8,.0f}   /now {ratio:.3f}")


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.resample:
        resample(args.reps)
    elif args.stream:
        stream(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
