"""ResNet50 fine-tuning throughput (the ``resnet50_finetune`` model, every layer training)
on in-memory 224 px images: images/s over all epochs but the first.

    python benchmarks/finetune_speed.py [--images 1024] [--epochs 3] [--batch 32] [--predict]

Random weights and random images (speed does not depend on them); the precision policy
and steps per execution are cvtrain's own for this device. ``--predict`` also times the
frozen backbone's forward pass alone (``pooling=None``, what the birds' feature extraction
computes) on the same images, as a bare ``predict``, over all passes but the first.
"""

import argparse
import time

from cvtrain.training.backend import select_backend


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--predict", action="store_true",
                   help="also time the backbone's forward pass (feature extraction)")
    args = p.parse_args()
    backend = select_backend("auto")
    import keras
    import numpy as np

    from cvtrain.models import build_model
    from cvtrain.models.resnet import FineTuneOptions
    from cvtrain.training.device import gpus, precision_policy, steps_per_execution
    from cvtrain.training.loop import chosen_loop, scan_steps

    found = gpus(backend)
    policy = precision_policy(found, mixed=bool(found))
    keras.mixed_precision.set_global_policy(policy)
    steps = args.images // args.batch
    spe = steps_per_execution("auto", steps, "gpu" if found else "cpu")
    model = build_model(FineTuneOptions(name="resnet50_finetune", weights="none"),
                        (224, 224, 3), 200)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="categorical_crossentropy",
                  metrics=["accuracy"], steps_per_execution=spe)
    scanned = backend == "jax" and chosen_loop("gpu" if found else "cpu") == "scan"
    scanned = scanned and scan_steps(model)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((steps * args.batch, 224, 224, 3), dtype=np.float32)
    y = np.eye(200, dtype=np.float32)[rng.integers(0, 200, len(x))]
    seconds = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.t0)

    model.fit(x, y, batch_size=args.batch, epochs=args.epochs, shuffle=False, verbose=0,
              callbacks=[Timer()])
    rate = len(x) * (args.epochs - 1) / sum(seconds[1:])
    print(f"resnet50_finetune: {rate:,.0f} images/s ({backend}, {policy}, batch {args.batch}, "
          f"steps per execution {spe}{' in one call' if scanned else ''}, "
          f"{[g.name for g in found] or 'CPU'})")
    if args.predict:
        from cvtrain.models.resnet import build_backbone

        backbone = build_backbone(FineTuneOptions(name="resnet50_finetune", weights="none"),
                                  224, pooling=None)
        passes = []
        for _ in range(args.epochs):
            t0 = time.perf_counter()
            backbone.predict(x, batch_size=args.batch, verbose=0)
            passes.append(time.perf_counter() - t0)
        rate = len(x) * (args.epochs - 1) / sum(passes[1:])
        print(f"resnet50 backbone forward (feature maps): {rate:,.0f} images/s ({backend}, "
              f"{policy}, batch {args.batch})")


if __name__ == "__main__":
    main()
