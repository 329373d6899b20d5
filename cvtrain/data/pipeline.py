"""tf.data input pipelines for in-memory image datasets (CIFAR-sized).

Order of operations, each for a reason:

1. The validation split is held out first (the last ``validation_split`` of the training
   set, as Keras's ``fit(validation_split=...)`` does), so nothing is fitted on it.
2. Normalisation statistics (per-channel mean and std, the ``featurewise_*`` of the
   coursework's ImageDataGenerator) come from the remaining training images only and are
   applied to validation and test as they are.
3. Augmentation runs on training batches only, as one projective transform per image
   composing shift, zoom, flip, rotation and shear: a single resampling, like the legacy
   generator, but vectorised over the batch.

The training stream spans all epochs (``range(epochs).flat_map(...)``) and is fed to
``fit`` with ``steps_per_epoch``: every random choice (shuffle order, transforms) is a
stateless function of (seed, epoch, batch), so a run is repeatable and a resumed run sees
exactly the batches an uninterrupted one would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cvtrain.errors import DataError


@dataclass
class Splits:
    """What training needs from a dataset: the three streams, sizes, the input shape."""

    train: Any  # tf.data.Dataset of (images float32 NHWC, one-hot labels), all epochs
    validation: Any  # tf.data.Dataset, batched, deterministic
    test: Any  # tf.data.Dataset, batched, deterministic
    steps_per_epoch: int
    train_size: int
    validation_size: int
    test_size: int
    input_shape: tuple[int, ...]
    details: dict = field(default_factory=dict)  # what metrics.json should record of the data


def split_train_validation(x: np.ndarray, y: np.ndarray, fraction: float):
    """(x_train, y_train, x_val, y_val): the last ``fraction`` of the samples is held out."""
    n_val = int(round(len(x) * fraction))
    if n_val < 1 or n_val >= len(x):
        raise DataError(f"data.validation_split: {fraction} of {len(x)} training images leaves "
                        "an empty side; expected a fraction that keeps both")
    cut = len(x) - n_val
    return x[:cut], y[:cut], x[cut:], y[cut:]


def channel_stats(x: np.ndarray, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (mean, std) in [0, 1] pixel units; identity (0, 1) when not normalising."""
    channels = x.shape[-1]
    if not normalize:
        return np.zeros(channels, np.float32), np.ones(channels, np.float32)
    # float64 accumulation in chunks: exact enough and bounded memory on 50k images
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for start in range(0, len(x), 4096):
        chunk = x[start : start + 4096].astype(np.float64) / 255.0
        total += chunk.sum(axis=(0, 1, 2))
        total_sq += np.square(chunk).sum(axis=(0, 1, 2))
    count = len(x) * x.shape[1] * x.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return mean.astype(np.float32), (std + 1e-7).astype(np.float32)


def augment_matrices(tf, batch: int, height: int, width: int, aug, seed) -> Any:
    """Per-image 8-vector projective transforms (output pixel -> input pixel) composing
    shift, zoom, horizontal flip, rotation and shear about the image centre."""
    seeds = tf.random.experimental.stateless_split(seed, num=6)

    def uniform(i, low, high):
        return tf.random.stateless_uniform([batch], seeds[i], low, high)

    zeros = tf.zeros([batch])
    ones = tf.ones([batch])
    ty = uniform(0, -aug.shift, aug.shift) * height if aug.shift else zeros
    tx = uniform(1, -aug.shift, aug.shift) * width if aug.shift else zeros
    zy = uniform(2, 1 - aug.zoom, 1 + aug.zoom) if aug.zoom else ones
    zx = uniform(3, 1 - aug.zoom, 1 + aug.zoom) if aug.zoom else ones
    flip = tf.where(uniform(4, 0.0, 1.0) < 0.5, -1.0, 1.0) if aug.horizontal_flip else ones
    angles = tf.random.stateless_uniform([batch, 2], seeds[5], -1.0, 1.0)
    theta = angles[:, 0] * (aug.rotation * math.pi / 180.0)
    shear = angles[:, 1] * (aug.shear * math.pi / 180.0)
    # M = Z . F . Shear . R  (2x2), rows (m00, m01), (m10, m11)
    cos_t, sin_t = tf.cos(theta), tf.sin(theta)
    sh_a, sh_c = -tf.sin(shear), tf.cos(shear)
    # Shear . R = [[1, sh_a], [0, sh_c]] . [[cos, -sin], [sin, cos]]
    s00 = cos_t + sh_a * sin_t
    s01 = -sin_t + sh_a * cos_t
    s10 = sh_c * sin_t
    s11 = sh_c * cos_t
    m00, m01 = zx * flip * s00, zx * flip * s01
    m10, m11 = zy * s10, zy * s11
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    # input = c + M (output - c) + t
    a2 = cx - m00 * cx - m01 * cy + tx
    b2 = cy - m10 * cx - m11 * cy + ty
    return tf.stack([m00, m01, a2, m10, m11, b2, zeros, zeros], axis=1)


def separable(augment) -> bool:
    """Whether the augmentation is axis-aligned (no rotation or shear) with a fill mode the
    separable resampler implements."""
    return (not augment.rotation and not augment.shear
            and augment.fill_mode in ("nearest", "constant"))


def _resample_axis(tf, x, scale, offset, axis: int, fill_mode: str):
    """Linear interpolation of ``x`` along one axis at ``source = scale * target + offset``
    (one map per image): two row gathers and a lerp."""
    size = x.shape[axis]
    target = tf.range(size, dtype=tf.float32)
    source = scale[:, None] * target[None, :] + offset[:, None]  # (B, size)
    if fill_mode == "nearest":
        source = tf.clip_by_value(source, 0.0, size - 1.0)
    low = tf.floor(source)
    frac = source - low
    low_i = tf.cast(low, tf.int32)
    high_i = low_i + 1
    if fill_mode == "constant":  # taps outside the image read zeros
        inside_low = tf.cast((low_i >= 0) & (low_i < size), x.dtype)
        inside_high = tf.cast((high_i >= 0) & (high_i < size), x.dtype)
    low_i = tf.clip_by_value(low_i, 0, size - 1)
    high_i = tf.clip_by_value(high_i, 0, size - 1)
    shape = [-1, 1, 1, 1]
    shape[axis] = size
    w_high = frac
    w_low = 1.0 - frac
    if fill_mode == "constant":
        w_low, w_high = w_low * inside_low, w_high * inside_high
    a = tf.gather(x, low_i, axis=axis, batch_dims=1)
    b = tf.gather(x, high_i, axis=axis, batch_dims=1)
    return a * tf.reshape(w_low, shape) + b * tf.reshape(w_high, shape)


def resample_separable(tf, x, transforms, fill_mode: str):
    """Apply axis-aligned projective transforms (m01 = m10 = 0) one axis at a time.

    Bilinear interpolation is separable, so for shift, zoom and flip this gives what
    ImageProjectiveTransformV3 gives (tested), with about half its CPU time."""
    x = _resample_axis(tf, x, transforms[:, 4], transforms[:, 5], 1, fill_mode)
    return _resample_axis(tf, x, transforms[:, 0], transforms[:, 2], 2, fill_mode)


def array_train_stream(images, onehot, batch_size: int, epochs: int, seed: int,
                       initial_epoch: int = 0, transform=None):
    """All epochs' training batches from in-memory tensors: each epoch a seeded shuffle,
    each batch gathered by index and passed through ``transform(batch_seed, x)``."""
    import tensorflow as tf

    n = int(images.shape[0])
    steps = math.ceil(n / batch_size)
    base_seed = tf.constant([seed, 0], tf.int64)

    def epoch_batches(epoch):
        epoch_seed = tf.random.experimental.stateless_fold_in(base_seed, epoch)
        order = tf.random.experimental.stateless_shuffle(tf.range(n), epoch_seed)

        def batch_indices(step):
            # slicing (clamped at the end) rather than .batch(): no per-image tf.data work
            return (tf.random.experimental.stateless_fold_in(epoch_seed, step),
                    order[step * batch_size:(step + 1) * batch_size])

        return tf.data.Dataset.range(steps).map(batch_indices)

    def load_batch(batch_seed, idx):
        x = tf.gather(images, idx)
        x = transform(batch_seed, x) if transform is not None else tf.cast(x, tf.float32)
        return x, tf.gather(onehot, idx)

    return (tf.data.Dataset.range(initial_epoch, epochs)
            .flat_map(epoch_batches)
            .map(load_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


def array_eval_stream(x, labels, num_classes: int, batch_size: int, prepare=None):
    """Ordered, cached batches for validation and test."""
    import tensorflow as tf

    prepare = prepare or (lambda a: tf.cast(a, tf.float32))
    return (tf.data.Dataset.from_tensor_slices((x, tf.one_hot(labels, num_classes)))
            .batch(batch_size)
            .map(lambda a, b: (prepare(a), b), num_parallel_calls=tf.data.AUTOTUNE)
            .cache()
            .prefetch(tf.data.AUTOTUNE))


def build_splits(
    data,
    num_classes: int,
    validation_split: float,
    normalize: bool,
    augment,
    batch_size: int,
    epochs: int,
    seed: int,
    initial_epoch: int = 0,
) -> Splits:
    """Turn in-memory uint8 arrays into the train/validation/test ``tf.data`` streams."""
    import tensorflow as tf

    x_tr, y_tr, x_val, y_val = split_train_validation(data.x_train, data.y_train, validation_split)
    mean, std = channel_stats(x_tr, normalize)
    height, width, channels = x_tr.shape[1:]
    # scale and normalise in one multiply-add: (x / 255 - mean) / std
    scale = tf.constant(1.0 / (255.0 * std), tf.float32)
    offset = tf.constant(-mean / std, tf.float32)
    fill_mode = augment.fill_mode
    fast_resample = separable(augment)

    def prepare(x):
        return tf.cast(x, tf.float32) * scale + offset

    def transform(batch_seed, x):
        x = tf.cast(x, tf.float32)
        if augment.enabled:
            transforms = augment_matrices(tf, tf.shape(x)[0], height, width, augment, batch_seed)
            if fast_resample:
                x = resample_separable(tf, x, transforms, fill_mode)
            else:
                x = tf.raw_ops.ImageProjectiveTransformV3(
                    images=x, transforms=transforms, output_shape=[height, width],
                    fill_value=0.0, interpolation="BILINEAR", fill_mode=fill_mode.upper())
        return x * scale + offset

    train = array_train_stream(tf.constant(x_tr), tf.one_hot(tf.constant(y_tr), num_classes),
                               batch_size, epochs, seed, initial_epoch, transform)
    return Splits(
        train=train,
        validation=array_eval_stream(x_val, y_val, num_classes, batch_size, prepare),
        test=array_eval_stream(data.x_test, data.y_test, num_classes, batch_size, prepare),
        steps_per_epoch=math.ceil(len(x_tr) / batch_size),
        train_size=len(x_tr),
        validation_size=len(x_val),
        test_size=len(data.x_test),
        input_shape=(height, width, channels),
        details={"normalization": {"mean": [float(v) for v in mean],
                                   "std": [float(v) for v in std]}},
    )
