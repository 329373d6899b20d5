"""Input streams for in-memory datasets (CIFAR images, cached backbone features), on any
Keras backend: ``tf.data`` on TensorFlow, plain numpy batches elsewhere, the same batches
in the same order on both.

Order of operations, each for a reason:

1. The validation split is held out first (the last ``validation_split`` of the training
   set, as Keras's ``fit(validation_split=...)`` does), so nothing is fitted on it.
2. Normalisation statistics (per-channel mean and std, the ``featurewise_*`` of the
   coursework's ImageDataGenerator) come from the remaining training images only and are
   applied to validation and test as they are.
3. Images travel as uint8 and are augmented and normalised inside the model being trained
   (:func:`build_splits`'s ``wrap``: :class:`~cvtrain.data.augment.RandomAffine`, then one
   multiply-add), so that work runs in the compiled step on the accelerator, and a batch
   crosses from host to device at a quarter of the float32 size.

The training stream spans all epochs and is fed to ``fit`` with ``steps_per_epoch``: the
shuffle order is a function of (seed, epoch) alone, and the augmentation's random state is
saved with every checkpoint, so a run is repeatable and a resumed run sees exactly the
batches an uninterrupted one would have.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cvtrain.errors import DataError


@dataclass
class Splits:
    """What training needs from a dataset: the three streams, sizes, the input shape."""

    train: Any  # (inputs, one-hot labels) batches of all epochs: tf.data or a generator
    validation: Any  # batched, deterministic: tf.data or a keras PyDataset
    test: Any  # the same
    steps_per_epoch: int
    train_size: int
    validation_size: int
    test_size: int
    input_shape: tuple[int, ...]
    details: dict = field(default_factory=dict)  # what metrics.json should record of the data
    #: builds the model that trains on these streams around the network (augmentation and
    #: normalisation layers in front); None: the network takes the streams as they are
    wrap: Callable[[Any], Any] | None = None


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


def _on_tensorflow() -> bool:
    import keras

    return keras.backend.backend() == "tensorflow"


def train_stream(x: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int,
                 epochs: int, seed: int, initial_epoch: int = 0):
    """All epochs' training batches of in-memory arrays (epochs ``initial_epoch`` ..
    ``epochs - 1``), each epoch in its own seeded order, as (x[idx], one-hot labels)."""
    if _on_tensorflow():
        return _tf_train_stream(x, labels, num_classes, batch_size, epochs, seed, initial_epoch)
    return _numpy_train_stream(x, labels, num_classes, batch_size, epochs, seed, initial_epoch)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the ``n`` training samples in ``epoch``: a function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def _numpy_train_stream(x, labels, num_classes, batch_size, epochs, seed,
                        initial_epoch) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    onehot = np.eye(num_classes, dtype=np.float32)[labels]
    steps = math.ceil(len(x) / batch_size)
    for epoch in range(initial_epoch, epochs):
        order = epoch_order(len(x), seed, epoch)
        for step in range(steps):
            idx = np.sort(order[step * batch_size:(step + 1) * batch_size])
            yield x[idx], onehot[idx]


def _tf_train_stream(x, labels, num_classes, batch_size, epochs, seed, initial_epoch):
    import tensorflow as tf

    images = tf.constant(x)
    onehot = tf.one_hot(tf.constant(labels), num_classes)
    steps = math.ceil(len(x) / batch_size)
    # the orders of all epochs, computed here with numpy: the same batches on every backend
    orders = np.stack([epoch_order(len(x), seed, e) for e in range(initial_epoch, epochs)])
    indices = np.concatenate([np.sort(o[s * batch_size:(s + 1) * batch_size])
                              for o in orders for s in range(steps)]) if len(orders) else \
        np.zeros(0, np.int64)
    bounds = np.cumsum([0] + [min(batch_size, len(x) - s * batch_size)
                              for _ in orders for s in range(steps)])
    starts, ends = tf.constant(bounds[:-1]), tf.constant(bounds[1:])
    index = tf.constant(indices.astype(np.int32))  # int64 gathers log a oneDNN notice

    def load_batch(i):
        idx = index[starts[i]:ends[i]]
        return tf.gather(images, idx), tf.gather(onehot, idx)

    # slicing by index rather than .batch(): no per-sample tf.data work
    return (tf.data.Dataset.range(len(bounds) - 1)
            .map(load_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


def eval_stream(x: np.ndarray, labels: np.ndarray, num_classes: int, batch_size: int):
    """Ordered batches for validation and test, re-iterable every epoch."""
    if _on_tensorflow():
        import tensorflow as tf

        return (tf.data.Dataset.from_tensor_slices((x, tf.one_hot(labels, num_classes)))
                .batch(batch_size).cache().prefetch(tf.data.AUTOTUNE))
    return _array_batches()(x, np.eye(num_classes, dtype=np.float32)[labels], batch_size)


def _array_batches():
    """A keras PyDataset class over in-memory arrays (defined on first use: importing this
    module must not import Keras, whose backend is chosen at run time)."""
    global _ArrayBatches
    if _ArrayBatches is None:
        import keras

        class ArrayBatches(keras.utils.PyDataset):
            def __init__(self, x, y, batch_size):
                super().__init__()
                self.x, self.y, self.batch_size = x, y, batch_size

            def __len__(self):
                return math.ceil(len(self.x) / self.batch_size)

            def __getitem__(self, i):
                part = slice(i * self.batch_size, (i + 1) * self.batch_size)
                return self.x[part], self.y[part]

        _ArrayBatches = ArrayBatches
    return _ArrayBatches


_ArrayBatches = None


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
    """In-memory uint8 images as train/validation/test streams, with the augmentation and
    normalisation layers that go in front of the network (:attr:`Splits.wrap`)."""
    x_tr, y_tr, x_val, y_val = split_train_validation(data.x_train, data.y_train, validation_split)
    mean, std = channel_stats(x_tr, normalize)
    shape = tuple(x_tr.shape[1:])
    # scale and normalise in one multiply-add: (x / 255 - mean) / std
    scale = [float(v) for v in 1.0 / (255.0 * std)]
    offset = [float(v) for v in -mean / std]

    import keras

    # imported now, not in wrap(): a resumed run loads its checkpoint (which holds this
    # layer) before it would wrap anything, and loading needs the class registered
    from cvtrain.data.augment import RandomAffine

    def wrap(network):
        inputs = keras.Input(shape, dtype="uint8", name="images")
        x = inputs
        if augment.enabled:
            x = RandomAffine(shift=augment.shift, zoom=augment.zoom,
                             horizontal_flip=augment.horizontal_flip, rotation=augment.rotation,
                             shear=augment.shear, fill_mode=augment.fill_mode, seed=seed,
                             name="augment")(x)
        x = keras.layers.Rescaling(scale, offset, name="normalize")(x)
        return keras.Model(inputs, network(x), name=f"train_{network.name}")

    return Splits(
        train=train_stream(x_tr, y_tr, num_classes, batch_size, epochs, seed, initial_epoch),
        validation=eval_stream(x_val, y_val, num_classes, batch_size),
        test=eval_stream(data.x_test, data.y_test, num_classes, batch_size),
        steps_per_epoch=math.ceil(len(x_tr) / batch_size),
        train_size=len(x_tr),
        validation_size=len(x_val),
        test_size=len(data.x_test),
        input_shape=shape,
        details={"normalization": {"mean": [float(v) for v in mean],
                                   "std": [float(v) for v in std]}},
        wrap=wrap,
    )
