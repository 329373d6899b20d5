"""The ``tf.data`` training stream (TensorFlow's side of
:func:`cvtrain.data.pipeline.train_stream`), with augmentation in its threads.

Each epoch is one gather of the images in its seeded order, then batches as slices. When
augmenting, the epoch's batches are augmented in chunks of :data:`AUGMENT_CHUNK`, their
random numbers keyed by (seed, epoch, chunk), on every core before the epoch's first
batch is handed on: on a CPU that measured faster than augmenting beside the training
step (``benchmarks/README.md``). The batches carry the indices of their images, which the
augmentation reads where the stream keeps them: shift, zoom and flip by two loops that
XLA compiles (:func:`_compiled`), rotation and shear by TensorFlow's
``ImageProjectiveTransformV3`` (``keras.ops.image.affine_transform``). A stream resumed
within an epoch skips the batches trained on by index and gets exactly the rest of what
the uninterrupted one gave.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from cvtrain.data.pipeline import epoch_order

#: the most bytes of augmented float32 batches an epoch's stream makes at once
AUGMENT_GROUP_BYTES = 256 << 20

#: augmented batches the stream holds ready for the step (a fixed number: autotuning is
#: off for augmented streams, see :func:`tf_train_stream`)
PREFETCH = 2

#: batches augmented in one call by the tf.data stream, their random numbers keyed by the
#: chunk (512 images: fewer calls and datasets than 128, so the wait for an epoch's first
#: batch is shorter, 32 against 43 ms for 11,250 images on 2 cores; the tf.data ops take
#: the same time an image at 128 and 512; ``benchmarks/augment_ab.py --stream``)
AUGMENT_CHUNK = 16


def _augment(tf, index, epoch_seed, chunk, options: dict, images, skip_rows: int = 0,
             rows: int | None = None):
    """The augmentation of a chunk of an epoch, its random numbers keyed by (seed, epoch,
    chunk); ``index`` the chunk's last images (indices into ``images``, the run's), when
    its first ``skip_rows`` of ``rows`` were trained on before a checkpoint (the draws are
    those of the whole chunk)."""
    from cvtrain.data.augment import NUM_DRAWS

    draws = tf.random.stateless_uniform(
        (tf.shape(index)[0] if rows is None else rows, NUM_DRAWS),
        tf.random.experimental.stateless_fold_in(epoch_seed, tf.cast(chunk, tf.int64)),
        -1.0, 1.0)[skip_rows:]
    return resample(tf, index, draws, options, images)


def resample(tf, index, draws, options: dict, images):
    """``images[index]`` (the run's images, a uint8 tensor) transformed by the matrices that
    ``draws`` make, float32 NHWC, as :func:`cvtrain.data.augment.augment` transforms them:
    shift, zoom and flip by two loops compiled by XLA (:func:`_compiled`), anything else
    by ``ImageProjectiveTransformV3``."""
    from cvtrain.data.augment import affine_matrices, axis_taps, project, separable

    options = dict(options)
    fill_mode = options.pop("fill_mode")
    height, width = images.shape[1], images.shape[2]
    transforms = affine_matrices(draws, height, width, **options)
    if RESAMPLER == "affine" or not separable({**options, "fill_mode": fill_mode}):
        # one pass, but about 4-6x the XLA loops' time an image on a CPU
        # (benchmarks/augment_ab.py --resample)
        return project(tf.gather(images, index), transforms, fill_mode)
    along_rows, along_columns = _compiled(tf)
    x = along_rows(images, index,
                   *axis_taps(transforms[:, 4], transforms[:, 5], height, fill_mode))
    return along_columns(x, *axis_taps(transforms[:, 0], transforms[:, 2], width, fill_mode))


#: how the stream resamples shift, zoom and flip: "xla" (:func:`_compiled`) or "affine"
#: (``ImageProjectiveTransformV3``, as rotation and shear); ``benchmarks/augment_ab.py``
#: compares them
RESAMPLER = "xla"


@functools.cache
def _compiled(tf):
    """Axis-aligned bilinear resampling (``augment.resample_separable``'s math, its taps
    computed by the caller) as two functions compiled by XLA, each one loop over its
    output: rows first, each output row the weighted sum of two whole rows read from where
    the run keeps its images (``images[index]``, uint8), then columns.

    Why XLA: as ``tf.data`` ops the same math was a dozen passes over every image (gathers,
    casts, broadcast products, transposes), 3-4x these loops' time an image
    (``benchmarks/augment_ab.py --resample`` at 0651682, which also timed numba's loop
    that these replace). Why two functions: in one, XLA fuses both axes into a loop that
    reads four pixels and recomputes the row weights for every output value, which
    measured no faster."""

    @tf.function(jit_compile=True)
    def rows(images, index, low, high, w_low, w_high):
        height, width, channels = images.shape[1:]
        stored = tf.reshape(images, (-1, width * channels))  # every image's rows in turn
        first = index[:, None] * height
        out = (tf.cast(tf.gather(stored, first + low), tf.float32) * w_low[:, :, None]
               + tf.cast(tf.gather(stored, first + high), tf.float32) * w_high[:, :, None])
        return tf.reshape(out, (-1, height, width, channels))

    @tf.function(jit_compile=True)
    def columns(x, low, high, w_low, w_high):
        return (tf.gather(x, low, axis=2, batch_dims=1) * w_low[:, None, :, None]
                + tf.gather(x, high, axis=2, batch_dims=1) * w_high[:, None, :, None])

    return rows, columns


def tf_train_stream(x, labels, num_classes, batch_size, epochs, seed, initial_epoch,
                    augment=None, first_step=0):
    """:func:`cvtrain.data.pipeline.train_stream` on TensorFlow: one gather per epoch, then
    batches as slices; augmentation (when asked) in the stream's threads."""
    import tensorflow as tf

    images = tf.constant(x)
    onehot = tf.one_hot(tf.constant(labels), num_classes)
    n = len(x)
    full, rest = divmod(n, batch_size)
    # each epoch's order computed with numpy: the same batches on every backend
    orders = tf.constant(np.array([epoch_order(n, seed, e, batch_size)
                                   for e in range(initial_epoch, epochs)],
                                  np.int32).reshape(-1, n))

    # augmented, batches carry the indices of their images (the augmentation reads the
    # images where they are kept), else the images
    shape = (batch_size,) if augment else (batch_size, *x.shape[1:])  # a batch as carried
    out_shape = (batch_size, *x.shape[1:])  # a batch augmented

    def epoch_batches(i, skip=0):
        # one gather per epoch, then batches are slices: no per-batch or per-sample work;
        # ``skip``: batches of the epoch trained on before a checkpoint, left out by index
        order = orders[i][skip * batch_size:] if skip else orders[i]
        xs = order if augment else tf.gather(images, order)
        ys = tf.gather(onehot, order)
        left = full - skip  # whole batches to come
        batches = tf.data.Dataset.from_tensor_slices(
            (tf.reshape(xs[:left * batch_size], (left, *shape)),
             tf.reshape(ys[:left * batch_size], (left, batch_size, num_classes))))
        if augment:
            epoch_seed = tf.random.experimental.stateless_fold_in(
                tf.constant([seed, 1], tf.int64), tf.cast(i, tf.int64) + initial_epoch)
            batches = _augmented(tf, batches, epoch_seed, shape, out_shape, augment, skip,
                                 full, images)
        if rest:  # the last, smaller batch
            last = (xs[left * batch_size:], ys[left * batch_size:])
            if augment:
                last = (_augment(tf, last[0], epoch_seed, full // AUGMENT_CHUNK + 1, augment,
                                 images), last[1])
            batches = batches.concatenate(tf.data.Dataset.from_tensors(last))
        return batches  # uint8 when not augmented: the model's input casts it in the step

    later = tf.data.Dataset.range(1 if first_step else 0, len(range(initial_epoch, epochs)))
    stream = later.flat_map(epoch_batches)
    if first_step:  # resumed within the first epoch (built as the others are, in flat_map)
        first = tf.data.Dataset.range(1).flat_map(lambda i: epoch_batches(i, first_step))
        stream = first.concatenate(stream)
    # augmented: a fixed buffer (what tf.data's autotuning would tune is off, below)
    stream = stream.prefetch(PREFETCH if augment else tf.data.AUTOTUNE)
    # each augmentation call on one core: the training step already spreads its ops over
    # all of them, and ops that also spread theirs in these threads only contend with it
    options = tf.data.Options()
    options.threading.max_intra_op_parallelism = 1
    if augment:
        # tf.data's autotuning thread re-optimises a model that grows with every chunk's
        # datasets: without it the wait for an epoch's first batch is shorter (32 against
        # 38 ms, benchmarks/augment_ab.py --stream), and the chunks still run on every core
        options.autotune.enabled = False
    return stream.with_options(options)


def _augmented(tf, batches, epoch_seed, shape, out_shape, options: dict, skip: int,
               full: int, images):
    """An epoch's whole batches (``skip`` of its ``full`` left out) augmented in chunks of
    :data:`AUGMENT_CHUNK` batches: one call per chunk amortises the per-call overhead that
    dominates on a batch of 32. Chunk k holds the epoch's batches 16k .. 16k+15 whatever
    was skipped, so its random numbers are the same; a chunk begun before the skip gets
    the rest of its draws.

    The epoch is augmented before its first batch is handed on (in groups of at most
    :data:`AUGMENT_GROUP_BYTES`): the chunks on every core while the step waits, then the
    step while the stream waits. On a CPU that measured faster than augmenting beside the
    step (benchmarks/README.md). A group is a ``window`` of chunks, each chunk then sliced
    into its batches: no copies (batching the group into one tensor copied every augmented
    image once more, about 3 % of BaseNet's epoch)."""
    size = AUGMENT_CHUNK

    def augment_chunk(chunk, batch, skip_rows=0, rows=None):
        xb, yb = batch
        out = _augment(tf, tf.reshape(xb, (-1,)), epoch_seed, chunk, options, images,
                       skip_rows, rows)
        return tf.reshape(out, (-1, *out_shape)), yb

    def one_chunk(ds, chunk, skip_rows=0, rows=None):  # a chunk's batches, one by one
        return ds.batch(size).map(
            lambda xb, yb: augment_chunk(tf.constant(chunk, tf.int64), (xb, yb), skip_rows,
                                         rows)).unbatch()

    def sliced(xs, ys):  # a group of chunks (a window of them), as its batches
        return tf.data.Dataset.zip((xs, ys)).flat_map(
            lambda xc, yc: tf.data.Dataset.from_tensor_slices((xc, yc)))

    parts = []
    chunk, into = divmod(skip, size)
    if into:  # the rest of the chunk begun
        head = min(size - into, full - skip)
        rows = min(size, full - chunk * size) * shape[0]
        parts.append(one_chunk(batches.take(head), chunk, into * shape[0], rows))
        batches, chunk = batches.skip(head), chunk + 1
    whole, short = divmod(max(0, full - chunk * size), size)
    group = max(1, AUGMENT_GROUP_BYTES // (4 * math.prod(out_shape) * size))  # chunks
    parts.append(batches.take(whole * size).batch(size, drop_remainder=True)  # maybe none
                 .enumerate(chunk)
                 .map(augment_chunk, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                 .window(group).flat_map(sliced))
    if short:  # the epoch's last chunk, of fewer batches
        parts.append(one_chunk(batches.skip(whole * size), chunk + whole))
    stream = parts[0]
    for part in parts[1:]:
        stream = stream.concatenate(part)
    return stream
