"""Input streams for in-memory datasets (CIFAR images, cached backbone features), on any
Keras backend: ``tf.data`` on TensorFlow, plain numpy batches elsewhere, the same batches
in the same order on both.

Order of operations, each for a reason:

1. The validation split is held out first (the last ``validation_split`` of the training
   set, as Keras's ``fit(validation_split=...)`` does), so nothing is fitted on it.
2. Normalisation statistics (per-channel mean and std, the ``featurewise_*`` of the
   coursework's ImageDataGenerator) come from the remaining training images only and are
   applied to validation and test as they are.
3. Augmentation and normalisation run where they measure fastest. Normalisation is one
   multiply-add at the front of the model being trained (:func:`build_splits`'s ``wrap``).
   On JAX, images cross to the device as uint8 and the augmentation layer
   (:class:`~cvtrain.data.augment.RandomAffine`) runs inside the compiled step; on
   TensorFlow the same augmentation math runs in the ``tf.data`` threads (shift, zoom and
   flip compiled by XLA, :func:`cvtrain.data.tfstream.resample`), on every core before an
   epoch's batches are handed on (measured faster than in the step or beside it:
   ``benchmarks/throughput.py``, ``benchmarks/README.md``).

The training stream spans all epochs and is fed to ``fit`` with ``steps_per_epoch``: the
shuffle order is a function of (seed, epoch) alone, and the augmentation's random numbers
come from (seed, epoch, batch) or from a generator saved with every checkpoint, so a run is
repeatable and a resumed run sees exactly the batches an uninterrupted one would have. A
run resumed within an epoch (a checkpoint after some of its steps) gets the rest of that
epoch as a stream of its own (:attr:`Splits.partial`), the consumed batches skipped by
index (never gathered, decoded or augmented), and the later epochs as ``train``.
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
    #: resumed within an epoch: the rest of that epoch's batches (``train`` then begins with
    #: the next epoch); None otherwise
    partial: Any = None
    #: whether the dataset can resume within an epoch (so checkpoints may be written there);
    #: False for a dataset whose ``streams`` predates ``initial_step``
    within_epoch: bool = True


def resumed(make: Callable[..., Any], epochs: int, initial_epoch: int,
            initial_step: int) -> tuple[Any, Any]:
    """(partial, train) for a run that continues at step ``initial_step`` of epoch
    ``initial_epoch`` (0-based): ``make(first_epoch, end_epoch, first_step)`` builds a
    training stream; at an epoch's end there is no partial stream."""
    if not initial_step:
        return None, make(initial_epoch, epochs, 0)
    return (make(initial_epoch, initial_epoch + 1, initial_step),
            make(initial_epoch + 1, epochs, 0))


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
                 epochs: int, seed: int, initial_epoch: int = 0, augment: dict | None = None,
                 first_step: int = 0):
    """All epochs' training batches of in-memory arrays (epochs ``initial_epoch`` ..
    ``epochs - 1``), each epoch in its own seeded order, as (x[idx], one-hot labels);
    the first epoch from its batch ``first_step`` on. ``augment`` (RandomAffine options,
    TensorFlow only) transforms each batch in the stream's threads, from random numbers
    keyed by (seed, epoch, batch)."""
    if _on_tensorflow():
        from cvtrain.data.tfstream import tf_train_stream

        return tf_train_stream(x, labels, num_classes, batch_size, epochs, seed, initial_epoch,
                               augment, first_step)
    if augment:
        raise ValueError("augmenting in the stream is for tf.data; elsewhere it is a layer")
    return _numpy_train_stream(x, labels, num_classes, batch_size, epochs, seed, initial_epoch,
                               first_step)


def epoch_order(n: int, seed: int, epoch: int, batch_size: int) -> np.ndarray:
    """The order of the ``n`` training samples in ``epoch``, a function of (seed, epoch):
    a seeded permutation, sorted within each batch (the gathers read memory in order)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return np.concatenate([np.sort(order[s:s + batch_size]) for s in range(0, n, batch_size)])


def _numpy_train_stream(x, labels, num_classes, batch_size, epochs, seed, initial_epoch,
                        first_step=0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    onehot = np.eye(num_classes, dtype=np.float32)[labels]
    steps = math.ceil(len(x) / batch_size)
    for epoch in range(initial_epoch, epochs):
        order = epoch_order(len(x), seed, epoch, batch_size)
        for step in range(first_step if epoch == initial_epoch else 0, steps):
            idx = order[step * batch_size:(step + 1) * batch_size]
            yield x[idx], onehot[idx]


#: the name of the scaling and normalisation layer in front of the network being trained
NORMALIZE_LAYER = "normalize"

#: where augmentation runs on TensorFlow: "stream" (the tf.data threads) or "step" (the
#: RandomAffine layer inside the training step, as on other backends)
TF_AUGMENT_IN = "stream"

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


def _along_rows(per_channel: np.ndarray, shape: tuple[int, ...]) -> list:
    """A per-channel value repeated over an image row (``shape`` is (height, width,
    channels)), as plain floats for the layer's config; the float32 values are unchanged, so
    ``x * scale + offset`` gives the same bits as with (channels,)."""
    row = np.broadcast_to(per_channel.astype(np.float32), (shape[1], shape[-1]))
    return [[float(v) for v in pixel] for pixel in row]


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
    initial_step: int = 0,
) -> Splits:
    """In-memory uint8 images as train/validation/test streams, with the augmentation and
    normalisation layers that go in front of the network (:attr:`Splits.wrap`)."""
    x_tr, y_tr, x_val, y_val = split_train_validation(data.x_train, data.y_train, validation_split)
    mean, std = channel_stats(x_tr, normalize)
    shape = tuple(x_tr.shape[1:])
    # scale and normalise in one multiply-add: (x / 255 - mean) / std, with each channel's
    # values repeated along a row: (width, channels) where (channels,) would do the same,
    # because TensorFlow's CPU kernels broadcast a last axis of 3 over 20x slower (the
    # difference was 14 % of BaseNet's training step; benchmarks/README.md)
    scale = _along_rows(1.0 / (255.0 * std), shape)
    offset = _along_rows(-mean / std, shape)

    import keras

    # imported now, not in wrap(): a resumed run loads its checkpoint (which holds this
    # layer) before it would wrap anything, and loading needs the class registered
    from cvtrain.data.augment import RandomAffine

    options = None
    if augment.enabled:
        options = {"shift": augment.shift, "zoom": augment.zoom,
                   "horizontal_flip": augment.horizontal_flip, "rotation": augment.rotation,
                   "shear": augment.shear, "fill_mode": augment.fill_mode}
    # where augmentation measures fastest: TensorFlow's tf.data threads, each epoch before
    # its batches (cvtrain.data.tfstream); elsewhere inside the compiled step
    in_stream = options is not None and _on_tensorflow() and TF_AUGMENT_IN == "stream"

    def wrap(network):
        # uint8 crosses to the device (a quarter of the bytes) and is cast in the step; on
        # TensorFlow, augmented batches come as float32 from the stream's threads (a uint8
        # input would truncate them), so the input is float32 and uint8 batches are cast
        inputs = keras.Input(shape, dtype="float32" if _on_tensorflow() else "uint8",
                             name="images")
        x = inputs
        if options is not None and not in_stream:
            x = RandomAffine(**options, seed=seed, name="augment")(x)
        x = keras.layers.Rescaling(scale, offset, name=NORMALIZE_LAYER)(x)
        return keras.Model(inputs, network(x), name=f"train_{network.name}")

    partial, train = resumed(
        lambda first, end, step: train_stream(x_tr, y_tr, num_classes, batch_size, end, seed,
                                              first, options if in_stream else None, step),
        epochs, initial_epoch, initial_step)
    return Splits(
        train=train,
        partial=partial,
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


def normalization(model):
    """A float32 copy of the scaling and normalisation layer of ``model`` (one that
    :attr:`Splits.wrap` built, or a checkpoint of one): ``x * scale + offset`` with the
    values the run trained with, as floats, to the bit."""
    import keras

    config = model.get_layer(NORMALIZE_LAYER).get_config()
    config["dtype"] = "float32"
    return keras.layers.Rescaling.from_config(config)
