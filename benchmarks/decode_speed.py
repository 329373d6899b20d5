"""Birds image decoding on one CPU core: JPEG decode, resize to 224 px and ResNet50
preprocessing, what fine-tuning does per image, images/s, best of 3 passes over 64 JPEGs of
CUB's usual size (500x375, quality 90): TensorFlow's (``cvtrain.data.birds.images.load_image``,
the tf.data path) and Pillow + numpy's (``cvtrain.data.birds.decode.load_image``, every
other backend).

    python benchmarks/decode_speed.py [--images 64] [--threads 1]

Fine-tuning decodes every training image every epoch, so this per-core rate times the
machine's cores bounds how fast fine-tuning can go there (a g5.xlarge has 4 vCPUs).
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import tensorflow as tf
    from PIL import Image

    from cvtrain.data.birds import decode as pillow
    from cvtrain.data.birds.images import load_image

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    folder = Path(tempfile.mkdtemp(prefix="cvtrain-decode-"))
    rng = np.random.default_rng(0)
    files = []
    for i in range(args.images):
        # smooth content (upsampled noise) compresses about as photographs do
        small = Image.fromarray(rng.integers(0, 255, (47, 63, 3), dtype=np.uint8))
        path = folder / f"{i}.jpg"
        small.resize((500, 375), Image.BICUBIC).save(path, quality=90)
        files.append(str(path))
    size = np.mean([Path(f).stat().st_size for f in files]) / 1024
    decode = tf.function(lambda path: load_image(tf, path, 224))
    for name, call in (("tensorflow", lambda f: decode(tf.constant(f))),
                       ("pillow+numpy", lambda f: pillow.load_image(f, 224))):
        for f in files[:4]:
            call(f)  # tracing, caches
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            for f in files:
                call(f)
            best = min(best, time.perf_counter() - t0)
        print(f"{name:<13} decode + resize + preprocess: {len(files) / best:,.0f} images/s on "
              f"{args.threads} thread(s) ({len(files)} JPEGs, 500x375, {size:.0f} KiB on "
              "average)")


if __name__ == "__main__":
    main()
