"""The birds' streaming image pipeline: batches decoded, resized and preprocessed from disk
as they are needed (the dataset never has to fit in memory). On the TensorFlow backend,
tf.data datasets (naming the file behind TensorFlow's anonymous decode failures); on any
other, Python batches decoded by Pillow in threads (:mod:`cvtrain.data.birds.decode`), so
the birds need no TensorFlow. Both decode JPEG files to the same pixels (TensorFlow with
its accurate DCT, as Pillow's libjpeg) and resize them alike (bilinear, half-pixel centres,
as the classifier's ``Resizing`` layer).

TensorFlow is imported inside the functions only, so importing the package does not load it.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from cvtrain.data.birds import decode
from cvtrain.errors import DataError

IMAGENET_BGR_MEAN = tuple(float(v) for v in decode.IMAGENET_BGR_MEAN)
#: threads that decode batches where tf.data does not (each decodes a whole batch)
WORKERS = max(1, min(8, os.cpu_count() or 1))


def _on_tensorflow() -> bool:
    import keras

    return keras.backend.backend() == "tensorflow"


def _tensorflow():
    """TensorFlow, which decodes and resizes the birds' JPEG files on every Keras backend;
    its absence is one clear line."""
    try:
        import tensorflow as tf
    except ImportError:
        from cvtrain.errors import UsageError

        raise UsageError("data.dataset: cub200 decodes its JPEG images with TensorFlow, which "
                         "is not installed; install it (pip install 'cvtrain[cpu]', or "
                         "'cvtrain[tf-gpu]') to train on the birds") from None
    return tf


def _decode(tf, data):
    """JPEG with the accurate DCT (Pillow's pixels), anything else as decode_image does."""
    return tf.cond(tf.io.is_jpeg(data),
                   lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
                   lambda: tf.io.decode_image(data, channels=3, expand_animations=False))


def load_image(tf, path, image_size: int):
    """Decode (JPEG, PNG, ...; grey becomes RGB), resize, ResNet50 preprocessing."""
    image = _decode(tf, tf.io.read_file(path))
    image = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size])
    image.set_shape([image_size, image_size, 3])
    return image[..., ::-1] - tf.constant(IMAGENET_BGR_MEAN, tf.float32)


def raw_image_layers(image_size: int) -> list:
    """What :func:`load_image` does after decoding, as built-in float32 Keras layers for a
    model that takes decoded uint8 images of any size: cast to float, bilinear resize to
    ``image_size`` (as ``tf.image.resize``), then ResNet50's ``preprocess_input`` as a
    frozen 3x3 Dense over the channels (RGB -> BGR, an exact permutation) whose bias
    subtracts the ImageNet means (no Lambda layer: the model loads in Keras's safe mode)."""
    import keras

    to_float = keras.layers.Rescaling(1.0, name="to_float", dtype="float32")
    resize = keras.layers.Resizing(image_size, image_size, interpolation="bilinear",
                                   name="resize", dtype="float32")
    caffe = keras.layers.Dense(3, name="preprocess_input", dtype="float32", trainable=False)
    caffe.build((None, None, None, 3))
    rgb_to_bgr = np.eye(3, dtype=np.float32)[::-1]
    caffe.set_weights([rgb_to_bgr, -np.asarray(IMAGENET_BGR_MEAN, np.float32)])
    return [to_float, resize, caffe]


def image_stream(files: list[str], labels: np.ndarray | None, image_size: int,
                 batch_size: int, num_classes: int = 0):
    """Ordered batches of preprocessed images (and one-hot labels when given)."""
    if not _on_tensorflow():
        onehot = None if labels is None else np.eye(num_classes, dtype=np.float32)[labels]
        return _file_batches()(files, onehot, image_size, batch_size)
    tf = _tensorflow()

    autotune = tf.data.AUTOTUNE
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.map(lambda p: load_image(tf, p, image_size), num_parallel_calls=autotune)
    if labels is not None:
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(
            tf.one_hot(labels, num_classes)))
    return ds.batch(batch_size).prefetch(autotune)


def training_image_stream(files: list[str], labels: np.ndarray, num_classes: int,
                          image_size: int, batch_size: int, epochs: int, seed: int,
                          initial_epoch: int = 0, first_step: int = 0):
    """All epochs' training batches, each epoch in its own seeded order, decoded from disk
    as they are needed (the dataset never has to fit in memory); the first epoch from its
    batch ``first_step`` on (the files before it are skipped by index, never read). Batches
    never span two epochs: an epoch ends with its short batch, if any, as ``fit``'s
    ``steps_per_epoch = ceil(n / batch_size)`` expects (so an epoch is always the same
    files, and a resumed run sees the batches an uninterrupted one would). The order is a
    function of (seed, epoch) on each path (tf.data's on TensorFlow, numpy's elsewhere)."""
    if not _on_tensorflow():
        return _threaded_training(files, labels, num_classes, image_size, batch_size, epochs,
                                  seed, initial_epoch, first_step)
    tf = _tensorflow()

    autotune = tf.data.AUTOTUNE
    paths = tf.constant(files)
    onehot = tf.one_hot(tf.constant(labels), num_classes)
    base_seed = tf.constant([seed, 1], tf.int64)

    def epoch_batches(epoch, skip=0):
        epoch_seed = tf.random.experimental.stateless_fold_in(base_seed, epoch)
        order = tf.data.Dataset.from_tensor_slices(
            tf.random.experimental.stateless_shuffle(tf.range(len(files)), epoch_seed))
        return (order.skip(skip)
                .map(lambda i: (load_image(tf, paths[i], image_size), onehot[i]),
                     num_parallel_calls=autotune, deterministic=True)
                .batch(batch_size))

    first = epoch_batches(tf.constant(initial_epoch, tf.int64), first_step * batch_size)
    if initial_epoch >= epochs:
        return first.take(0)
    rest = tf.data.Dataset.range(initial_epoch + 1, epochs).flat_map(epoch_batches)
    return first.concatenate(rest).prefetch(autotune)


def find_unreadable(files: list[str]) -> str | None:
    """The first file TensorFlow cannot decode (used to name the culprit of a failed batch)."""
    tf = _tensorflow()

    for file in files:
        try:
            _decode(tf, tf.io.read_file(file))
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
            return file
    return None


@contextlib.contextmanager
def image_errors(files: list[str]):
    """Turn TensorFlow's anonymous decode failures into a DataError naming the file (the
    Pillow path names it itself)."""
    if not _on_tensorflow():
        yield
        return
    tf = _tensorflow()

    try:
        yield
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
        bad = find_unreadable(files)
        if bad is None:
            raise
        raise DataError(f"{bad}: not a readable image (corrupt or not JPEG/PNG)") from None


def _load_batch(files, image_size: int) -> np.ndarray:
    return np.stack([decode.load_image(f, image_size) for f in files])


def _threaded_training(files, labels, num_classes, image_size, batch_size, epochs, seed,
                       initial_epoch, first_step):
    """:func:`training_image_stream` without TensorFlow: a generator of (images, one-hot)
    batches, :data:`WORKERS` batches decoded ahead in threads (Pillow and numpy release the
    GIL for the heavy part)."""
    from cvtrain.data.pipeline import epoch_order

    onehot = np.eye(num_classes, dtype=np.float32)[labels]
    steps = math.ceil(len(files) / batch_size)
    # each batch's indices, the epoch's order computed once
    wanted = (order[step * batch_size:(step + 1) * batch_size]
              for epoch in range(initial_epoch, epochs)
              for order in [epoch_order(len(files), seed, epoch, batch_size)]
              for step in range(first_step if epoch == initial_epoch else 0, steps))

    def batch(idx):
        return _load_batch([files[i] for i in idx], image_size), onehot[idx]

    with ThreadPoolExecutor(WORKERS, thread_name_prefix="cvtrain-decode") as pool:
        ahead: deque = deque()  # WORKERS + 1 batches in flight
        for idx in wanted:
            ahead.append(pool.submit(batch, idx))
            if len(ahead) > WORKERS:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()


def _file_batches():
    """A keras PyDataset class of ordered batches decoded from files in :data:`WORKERS`
    threads (defined on first use: importing this module must not import Keras)."""
    global _FileBatches
    if _FileBatches is None:
        import keras

        class FileBatches(keras.utils.PyDataset):
            def __init__(self, files, onehot, image_size, batch_size):
                super().__init__(workers=WORKERS, use_multiprocessing=False)
                self.files, self.onehot = files, onehot
                self.image_size, self.batch_size = image_size, batch_size

            def __len__(self):
                return math.ceil(len(self.files) / self.batch_size)

            def __getitem__(self, i):
                part = slice(i * self.batch_size, (i + 1) * self.batch_size)
                x = _load_batch(self.files[part], self.image_size)
                return x if self.onehot is None else (x, self.onehot[part])

        _FileBatches = FileBatches
    return _FileBatches


_FileBatches = None
