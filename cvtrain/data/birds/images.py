"""The birds' streaming image pipeline: tf.data datasets that decode, resize and
preprocess images from disk as they are needed (the dataset never has to fit in memory),
and naming the file behind TensorFlow's anonymous decode failures.

TensorFlow is imported inside the functions only, so importing the package does not load it.
"""

from __future__ import annotations

import contextlib

import numpy as np

from cvtrain.errors import DataError

# ResNet50's preprocess_input ("caffe" mode): RGB -> BGR, minus the ImageNet BGR means
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)


def _tensorflow():
    """TensorFlow, which decodes and resizes the birds' JPEG files on every Keras backend;
    its absence is one clear line."""
    try:
        import tensorflow as tf
    except ImportError:
        from cvtrain.errors import UsageError

        raise UsageError("data.dataset: cub200 decodes its JPEG images with TensorFlow, which "
                         "is not installed; install it (pip install 'cvtrain[cpu]', or "
                         "'cvtrain[gpu]') to train on the birds") from None
    return tf


def load_image(tf, path, image_size: int):
    """Decode (JPEG, PNG, ...; grey becomes RGB), resize, ResNet50 preprocessing."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
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
    files, and a resumed run sees the batches an uninterrupted one would)."""
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
            tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
            return file
    return None


@contextlib.contextmanager
def image_errors(files: list[str]):
    """Turn TensorFlow's anonymous decode failures into a DataError naming the file."""
    tf = _tensorflow()

    try:
        yield
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
        bad = find_unreadable(files)
        if bad is None:
            raise
        raise DataError(f"{bad}: not a readable image (corrupt or not JPEG/PNG)") from None
