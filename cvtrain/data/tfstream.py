"""The ``tf.data`` training stream (TensorFlow's side of
:func:`cvtrain.data.pipeline.train_stream`), with augmentation in its threads.

Each epoch is one gather of the images in its seeded order, then batches as slices. When
augmenting, the epoch's batches are augmented in chunks of :data:`AUGMENT_CHUNK`, their
random numbers keyed by (seed, epoch, chunk), on every core before the epoch's first
batch is handed on: on a CPU that measured faster than augmenting beside the training
step (``benchmarks/README.md``). A stream resumed within an epoch skips the batches
trained on by index and gets exactly the rest of what the uninterrupted one gave.
"""

from __future__ import annotations

import math

import numpy as np

from cvtrain.data.pipeline import epoch_order

#: the most bytes of augmented float32 batches an epoch's stream makes at once
AUGMENT_GROUP_BYTES = 256 << 20

#: batches augmented in one call by the tf.data stream (128 images: measured fastest per
#: image on a CPU, see :data:`cvtrain.data.augment.RESAMPLERS`)
AUGMENT_CHUNK = 4


def _augment(tf, images, epoch_seed, chunk, options: dict, skip_rows: int = 0,
             rows: int | None = None, transposed: bool = False):
    """The augmentation of a chunk of an epoch, its random numbers keyed by (seed, epoch,
    chunk); ``images`` the chunk's last images, when its first ``skip_rows`` of ``rows``
    were trained on before a checkpoint (the draws are those of the whole chunk)."""
    from cvtrain.data.augment import NUM_DRAWS, augment

    draws = tf.random.stateless_uniform(
        (tf.shape(images)[0] if rows is None else rows, NUM_DRAWS),
        tf.random.experimental.stateless_fold_in(epoch_seed, tf.cast(chunk, tf.int64)),
        -1.0, 1.0)
    return augment(images, draws[skip_rows:], resampler="gather", transposed=transposed,
                   **options)


def tf_train_stream(x, labels, num_classes, batch_size, epochs, seed, initial_epoch,
                    augment=None, first_step=0):
    """:func:`cvtrain.data.pipeline.train_stream` on TensorFlow: one gather per epoch, then
    batches as slices; augmentation (when asked) in the stream's threads."""
    import tensorflow as tf

    from cvtrain.data.augment import separable

    # an axis-aligned augmentation reads its images transposed (NWHC), once for the run:
    # one transpose of float32 less an image (cvtrain.data.augment.resample_separable)
    transposed = bool(augment) and separable(augment)
    images = tf.constant(np.ascontiguousarray(x.swapaxes(1, 2)) if transposed else x)
    onehot = tf.one_hot(tf.constant(labels), num_classes)
    n = len(x)
    full, rest = divmod(n, batch_size)
    # each epoch's order computed with numpy: the same batches on every backend
    orders = tf.constant(np.array([epoch_order(n, seed, e, batch_size)
                                   for e in range(initial_epoch, epochs)],
                                  np.int32).reshape(-1, n))

    shape = (batch_size, *images.shape[1:])  # a batch as stored

    def epoch_batches(i, skip=0):
        # one gather per epoch, then batches are slices: no per-batch or per-sample work;
        # ``skip``: batches of the epoch trained on before a checkpoint, left out by index
        order = orders[i][skip * batch_size:] if skip else orders[i]
        xs, ys = tf.gather(images, order), tf.gather(onehot, order)
        left = full - skip  # whole batches to come
        batches = tf.data.Dataset.from_tensor_slices(
            (tf.reshape(xs[:left * batch_size], (left, *shape)),
             tf.reshape(ys[:left * batch_size], (left, batch_size, num_classes))))
        if augment:
            epoch_seed = tf.random.experimental.stateless_fold_in(
                tf.constant([seed, 1], tf.int64), tf.cast(i, tf.int64) + initial_epoch)
            batches = _augmented(tf, batches, epoch_seed, shape, augment, skip, full,
                                 transposed)
        if rest:  # the last, smaller batch
            last = (xs[left * batch_size:], ys[left * batch_size:])
            if augment:
                last = (_augment(tf, last[0], epoch_seed, full // AUGMENT_CHUNK + 1, augment,
                                 transposed=transposed), last[1])
            batches = batches.concatenate(tf.data.Dataset.from_tensors(last))
        return batches  # uint8 when not augmented: the model's input casts it in the step

    later = tf.data.Dataset.range(1 if first_step else 0, len(range(initial_epoch, epochs)))
    stream = later.flat_map(epoch_batches)
    if first_step:  # resumed within the first epoch (built as the others are, in flat_map)
        first = tf.data.Dataset.range(1).flat_map(lambda i: epoch_batches(i, first_step))
        stream = first.concatenate(stream)
    stream = stream.prefetch(tf.data.AUTOTUNE)
    # each augmentation call on one core: the training step already spreads its ops over
    # all of them, and ops that also spread theirs in these threads only contend with it
    options = tf.data.Options()
    options.threading.max_intra_op_parallelism = 1
    return stream.with_options(options)


def _augmented(tf, batches, epoch_seed, shape, options: dict, skip: int, full: int,
               transposed: bool = False):
    """An epoch's whole batches (``skip`` of its ``full`` left out) augmented in chunks of
    :data:`AUGMENT_CHUNK` batches: one call per chunk amortises the per-op overhead that
    dominates on a batch of 32, while a chunk still fits in cache. Chunk k holds the
    epoch's batches 4k .. 4k+3 whatever was skipped, so its random numbers are the same;
    a chunk begun before the skip gets the rest of its draws.

    The epoch is augmented before its first batch is handed on (in groups of at most
    :data:`AUGMENT_GROUP_BYTES`): the chunks on every core while the step waits, then the
    step while the stream waits. On a CPU that measured faster than augmenting beside the
    step (benchmarks/README.md). A group is a ``window`` of chunks, each chunk then sliced
    into its batches: no copies (batching the group into one tensor copied every augmented
    image once more, about 3 % of BaseNet's epoch)."""
    size = AUGMENT_CHUNK
    # ``shape`` is a batch as stored; augmented, it is NHWC
    out_shape = (shape[0], shape[2], shape[1], shape[3]) if transposed else shape

    def augment_chunk(chunk, batch, skip_rows=0, rows=None):
        xb, yb = batch
        out = _augment(tf, tf.reshape(xb, (-1, *shape[1:])), epoch_seed, chunk, options,
                       skip_rows, rows, transposed)
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
    group = max(1, AUGMENT_GROUP_BYTES // (4 * math.prod(shape) * size))  # chunks
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
