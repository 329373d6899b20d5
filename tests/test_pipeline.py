"""In-memory input streams and the augmentation layer: split before fitting, statistics from
training only, augmentation on training batches only and repeatable (also across a save
and reload), the fast resamplers equal to TensorFlow's, the same batches from the
tf.data and the numpy streams."""

import itertools
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

from cvtrain.data import pipeline, tfstream
from cvtrain.data.augment import (
    NUM_DRAWS,
    RandomAffine,
    affine_matrices,
    augment,
    resample_separable,
)
from cvtrain.data.cifar.dataset import Augment
from cvtrain.data.pipeline import build_splits, channel_stats, split_train_validation
from cvtrain.errors import DataError


def fake_data(n_train=200, n_test=40, seed=0):
    rng = np.random.default_rng(seed)
    return SimpleNamespace(
        x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        y_train=rng.integers(0, 5, n_train), x_test=rng.integers(0, 256, (n_test, 32, 32, 3),
                                                                dtype=np.uint8),
        y_test=rng.integers(0, 5, n_test))


def identity_network(shape=(32, 32, 3)):
    inputs = keras.Input(shape)
    return keras.Model(inputs, keras.layers.Identity()(inputs), name="identity")


def test_validation_is_held_out_from_the_end():
    x, y = np.arange(100), np.arange(100)
    xt, yt, xv, yv = split_train_validation(x, y, 0.1)
    assert list(xv) == list(range(90, 100)) and len(xt) == 90
    with pytest.raises(DataError, match="data.validation_split: 0.01 of 5"):
        split_train_validation(x[:5], y[:5], 0.01)


def test_normalisation_statistics_come_from_the_training_split_only():
    data = fake_data()
    data.x_train[180:] = 255  # the validation part is very bright
    splits = build_splits(data, 5, 0.1, True, Augment(), 16, 1, seed=0)
    mean, std = channel_stats(data.x_train[:180], True)
    np.testing.assert_allclose(splits.details["normalization"]["mean"], mean, rtol=1e-6)
    assert max(splits.details["normalization"]["mean"]) < 0.6
    model = splits.wrap(identity_network())
    x_train = np.concatenate([model(x, training=False) for x, _ in splits.train])
    assert abs(x_train.mean()) < 0.05 and abs(x_train.std() - 1) < 0.05
    x_val = np.concatenate([model(x, training=False) for x, _ in splits.validation])
    np.testing.assert_allclose(x_val, (1.0 - mean) / std * np.ones_like(x_val), rtol=1e-4)


def test_normalisation_is_per_channel_with_values_repeated_along_a_row():
    # (width, channels) so that TensorFlow's CPU kernels broadcast it fast; the values are
    # the per-channel float32 ones, so the layer gives the same bits as (channels,) would
    data = fake_data()
    splits = build_splits(data, 5, 0.1, True, Augment(), 16, 1, seed=0)
    layer = splits.wrap(identity_network()).get_layer(pipeline.NORMALIZE_LAYER)
    scale, offset = np.array(layer.scale, np.float32), np.array(layer.offset, np.float32)
    assert scale.shape == offset.shape == (32, 3)
    assert (scale == scale[0]).all() and (offset == offset[0]).all()
    mean, std = channel_stats(data.x_train[:180], True)
    np.testing.assert_array_equal(scale[0], (1.0 / (255.0 * std)).astype(np.float32))
    per_channel = keras.layers.Rescaling([float(v) for v in scale[0]],
                                         [float(v) for v in offset[0]])
    x = data.x_test.astype(np.float32)
    np.testing.assert_array_equal(np.asarray(layer(x)), np.asarray(per_channel(x)))
    copy = pipeline.normalization(splits.wrap(identity_network()))
    np.testing.assert_array_equal(np.asarray(copy(x)), np.asarray(layer(x)))


def test_streams_carry_uint8_in_a_seeded_order_per_epoch():
    data = fake_data()
    a = build_splits(data, 5, 0.1, False, Augment(), 16, 2, seed=4)
    b = build_splits(data, 5, 0.1, False, Augment(), 16, 2, seed=4)
    first = [x.numpy() for x, _ in a.train]
    assert first[0].dtype == np.uint8
    assert len(first) == 2 * a.steps_per_epoch and sum(len(x) for x in first) == 2 * 180
    np.testing.assert_array_equal(first[3], next(iter(b.train.skip(3)))[0].numpy())
    labels = [y.numpy().argmax(1) for _, y in a.train]  # epochs see different orders
    assert not np.array_equal(np.concatenate(labels[:a.steps_per_epoch]),
                              np.concatenate(labels[a.steps_per_epoch:]))
    # every training image once per epoch
    epoch = np.concatenate(first[:a.steps_per_epoch]).reshape(180, -1)
    assert len(np.unique(epoch, axis=0)) == 180


def test_resume_from_an_epoch_replays_the_same_batches():
    data = fake_data()
    full = build_splits(data, 5, 0.1, False, Augment(), 16, 3, seed=9)
    resumed = build_splits(data, 5, 0.1, False, Augment(), 16, 3, seed=9, initial_epoch=2)
    tail = [x.numpy() for x, _ in full.train][2 * full.steps_per_epoch:]
    np.testing.assert_array_equal(np.concatenate(tail),
                                  np.concatenate([x.numpy() for x, _ in resumed.train]))


def test_resume_within_an_epoch_gives_the_rest_of_it_then_the_later_epochs():
    """A run resumed after some steps of an epoch: the rest of that epoch (the partial
    stream, the short last batch included), then the later epochs, equal to those batches
    of an uninterrupted stream, on both streams (tf.data and numpy)."""
    data = fake_data()  # 180 training images: 12 batches of 16 (the last of 4) an epoch
    full = build_splits(data, 5, 0.1, False, Augment(), 16, 3, seed=9)
    batches = [x.numpy() for x, _ in full.train]
    steps = full.steps_per_epoch
    for step in (1, 5, steps - 1):
        resumed = build_splits(data, 5, 0.1, False, Augment(), 16, 3, seed=9,
                               initial_epoch=1, initial_step=step)
        partial = [x.numpy() for x, _ in resumed.partial]
        assert len(partial) == steps - step
        np.testing.assert_array_equal(np.concatenate(partial),
                                      np.concatenate(batches[steps + step:2 * steps]))
        np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in resumed.train]),
                                      np.concatenate(batches[2 * steps:]))
    at_end = build_splits(data, 5, 0.1, False, Augment(), 16, 3, seed=9, initial_epoch=1)
    assert at_end.partial is None
    args = (data.x_train[:180], data.y_train[:180], 5, 16, 2, 7, 1)
    ours = list(pipeline._numpy_train_stream(*args, first_step=5))
    theirs = list(pipeline._numpy_train_stream(*args))[5:]
    assert len(ours) == len(theirs) == 12 - 5
    for (xa, ya), (xb, yb) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


@pytest.mark.slow
@pytest.mark.parametrize("grouped, rotation", [(False, 0), (True, 10)],
                         ids=["epoch-at-once-axis-aligned", "groups-of-a-chunk-rotated"])
def test_tf_data_augmentation_resumed_within_an_epoch_is_the_same_to_the_bit(grouped, rotation,
                                                                             monkeypatch):
    """Augmented in the stream (chunks of AUGMENT_CHUNK batches, random numbers per chunk):
    resumed at a step inside a chunk, at a chunk's start, or with only the short last
    batch left, the rest of the epoch is what the uninterrupted stream gave, to the bit;
    the skipped batches are never augmented (the first chunk's draws are sliced). The same
    when the epoch is augmented in groups smaller than it (across chunks), and for both
    the stream's resampler (axis-aligned) and affine_transform (rotated)."""
    data = fake_data(n_train=400)  # 360 training images: 22 full batches of 16 and one of 8
    aug = Augment(shift=0.1, zoom=0.1, horizontal_flip=True, rotation=rotation)
    full = build_splits(data, 5, 0.1, False, aug, 16, 2, seed=4)
    steps = full.steps_per_epoch
    # chunks of 16 batches: 0-15, then a short one (16-21), then the last, smaller batch
    assert steps == 23 and tfstream.AUGMENT_CHUNK == 16
    batches = [x.numpy() for x, _ in full.train]
    if grouped:  # batches of 8: 45, two whole chunks and a short one, held whole above
        whole = [x.numpy() for x, _ in build_splits(data, 5, 0.1, False, aug, 8, 2,
                                                     seed=4).train]
        # groups of one chunk of float32 batches of 8: the epoch's two whole chunks apart
        monkeypatch.setattr(tfstream, "AUGMENT_GROUP_BYTES",
                            tfstream.AUGMENT_CHUNK * 8 * 32 * 32 * 3 * 4)
        parts = build_splits(data, 5, 0.1, False, aug, 8, 2, seed=4)
        for got, want in zip([x.numpy() for x, _ in parts.train], whole, strict=True):
            np.testing.assert_array_equal(got, want)
    for epoch, step in ((0, 3), (0, 16), (0, 19), (0, 22), (1, 4), (1, 21)):
        resumed = build_splits(data, 5, 0.1, False, aug, 16, 2, seed=4, initial_epoch=epoch,
                               initial_step=step)
        partial = [x.numpy() for x, _ in resumed.partial]
        assert len(partial) == steps - step, step
        for got, want in zip(partial, batches[epoch * steps + step:(epoch + 1) * steps],
                             strict=True):
            np.testing.assert_array_equal(got, want)
        rest = [x.numpy() for x, _ in resumed.train]
        assert len(rest) == (1 - epoch) * steps
        if rest:
            np.testing.assert_array_equal(np.concatenate(rest), np.concatenate(batches[steps:]))
    # 16 whole batches of 22 (one whole chunk, no short one) and one of 8: resumed inside
    # the chunk, and with only the last, smaller batch left
    full = build_splits(data, 5, 0.1, False, aug, 22, 1, seed=4)
    batches = [x.numpy() for x, _ in full.train]
    assert len(batches) == 17 and len(batches[-1]) == 8
    for step in (8, 16):
        resumed = build_splits(data, 5, 0.1, False, aug, 22, 1, seed=4, initial_step=step)
        for got, want in zip([x.numpy() for x, _ in resumed.partial], batches[step:],
                             strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_tf_data_augmentation_is_keyed_by_seed_epoch_and_batch():
    """On TensorFlow augmentation runs in the stream: training batches only, the same for
    the same seed, and a stream started at a later epoch replays exactly those batches."""
    data = fake_data(n_train=400)
    aug = Augment(shift=0.1, zoom=0.1, horizontal_flip=True)
    a = build_splits(data, 5, 0.1, False, aug, 16, 3, seed=4)
    b = build_splits(data, 5, 0.1, False, aug, 16, 3, seed=4)
    plain = build_splits(data, 5, 0.1, False, Augment(), 16, 3, seed=4)
    first = [x.numpy() for x, _ in a.train]
    assert first[0].dtype == np.float32 and len(first) == 3 * a.steps_per_epoch
    assert first[-1].shape[0] == 360 % 16  # the last, smaller batch is augmented too
    for x, y in zip(first, [x.numpy() for x, _ in b.train], strict=True):
        np.testing.assert_array_equal(x, y)
    plain_first = [x.numpy() for x, _ in plain.train]
    assert all(not np.allclose(x, p) for x, p in zip(first, plain_first, strict=True))
    labels = [(y.numpy() for _, y in s.train) for s in (a, plain)]
    for ya, yp in zip(*labels, strict=True):
        np.testing.assert_array_equal(ya, yp)  # the same images, transformed
    resumed = build_splits(data, 5, 0.1, False, aug, 16, 3, seed=4, initial_epoch=2)
    np.testing.assert_array_equal(np.concatenate(first[2 * a.steps_per_epoch:]),
                                  np.concatenate([x.numpy() for x, _ in resumed.train]))
    for split in ("validation", "test"):  # never augmented
        np.testing.assert_array_equal(
            np.concatenate([x.numpy() for x, _ in getattr(a, split)]),
            np.concatenate([x.numpy() for x, _ in getattr(plain, split)]))


def test_the_tf_data_and_numpy_streams_give_the_same_batches():
    data = fake_data(n_train=100)
    args = (data.x_train, data.y_train, 5, 16, 3, 7, 1)
    ours = list(pipeline._numpy_train_stream(*args))
    theirs = [(x.numpy(), y.numpy()) for x, y in tfstream.tf_train_stream(*args)]
    assert len(ours) == len(theirs) == 2 * 7
    for (xa, ya), (xb, yb) in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize("rotation, resampler", [(0.0, "xla"), (0.0, "affine"), (15.0, "xla")],
                         ids=["axis-aligned-xla", "axis-aligned-affine-transform", "rotated"])
def test_tf_data_augmentation_is_the_documented_transform_of_each_chunk(rotation, resampler,
                                                                        monkeypatch):
    """What the stream hands on is the transform of the epoch's images that the draws of
    (seed, epoch, chunk) make, in NHWC, whichever way it resamples (tfstream.RESAMPLER for
    axis-aligned transforms, affine_transform for rotations): images of 24 x 32 pixels,
    so that height and width cannot be mixed up, against the matmul resampler or
    affine_transform."""
    monkeypatch.setattr(tfstream, "RESAMPLER", resampler)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (75, 24, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 5, 75)
    opts = dict(shift=0.2, zoom=0.2, horizontal_flip=True, rotation=rotation, shear=0.0,
                fill_mode="nearest")
    got = [b.numpy() for b, _ in pipeline.train_stream(x, y, 5, 4, 1, 4, augment=dict(opts))]
    assert [b.shape for b in got] == [(4, 24, 32, 3)] * 18 + [(3, 24, 32, 3)]
    images = x[pipeline.epoch_order(75, 4, 0, 4)]
    fold_in = tf.random.experimental.stateless_fold_in  # int64 keys, as in the stream
    epoch_seed = fold_in(tf.constant([4, 1], tf.int64), tf.constant(0, tf.int64))
    assert tfstream.AUGMENT_CHUNK == 16
    # batches of 4: a whole chunk (the parallel path), a short one, the last smaller batch
    for chunk, (first, end) in ((0, (0, 64)), (1, (64, 72)), (2, (72, 75))):
        draws = tf.random.stateless_uniform(
            (end - first, NUM_DRAWS), fold_in(epoch_seed, tf.constant(chunk, tf.int64)),
            -1.0, 1.0)
        want = augment(images[first:end], draws, **dict(opts))
        np.testing.assert_allclose(np.concatenate(got)[first:end], want, atol=1e-3)


@pytest.mark.parametrize("fill_mode, channels",
                         list(itertools.product(["nearest", "constant"], [3, 1])))
def test_stream_resampler_is_the_separable_resampler_on_the_images_it_indexes(fill_mode,
                                                                               channels):
    """The stream's axis-aligned resampling (compiled by XLA) reads ``images[index]`` (any
    order, repeats) and resamples it as resample_separable does: non-square images, shifts
    and zooms that reach past the edges, flips, three channels and one."""
    rng = np.random.default_rng(5)
    images = rng.integers(1, 256, (40, 24, 32, channels), dtype=np.uint8)  # 0: the fill
    index = rng.integers(0, 40, 50).astype(np.int32)
    draws = rng.uniform(-1, 1, (50, NUM_DRAWS)).astype(np.float32)
    opts = dict(shift=0.4, zoom=0.5, horizontal_flip=True, rotation=0.0, shear=0.0,
                fill_mode=fill_mode)
    ours = np.asarray(tfstream.resample(tf, tf.constant(index), tf.constant(draws), opts,
                                        tf.constant(images)))
    assert ours.dtype == np.float32 and ours.shape == (50, 24, 32, channels)
    want = augment(images[index], draws, **dict(opts))
    np.testing.assert_allclose(ours, want, atol=1e-3)
    assert (ours == 0).any() == (fill_mode == "constant")  # past the edges: zeros or edges


def test_augmentation_acts_on_training_batches_only_and_repeats_with_the_seed():
    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
    opts = dict(shift=0.1, zoom=0.1, horizontal_flip=True)
    a, b = RandomAffine(**opts, seed=3), RandomAffine(**opts, seed=3)
    np.testing.assert_array_equal(a(x, training=False), x.astype(np.float32))
    first = np.asarray(a(x, training=True))
    np.testing.assert_array_equal(first, b(x, training=True))
    assert not np.allclose(first, x)
    assert not np.allclose(first, a(x, training=True))  # the next batch draws anew


def test_augmentation_and_dropout_states_survive_a_checkpoint(tmp_path):
    """A checkpoint holds the random generators' states (``model.keras`` alone does not):
    a resumed run draws what an uninterrupted one would have."""
    from cvtrain.training import checkpoint

    inputs = keras.Input((32, 32, 3), dtype="uint8")
    x = RandomAffine(rotation=10, shear=5, horizontal_flip=True, seed=1)(inputs)
    model = keras.Model(inputs, keras.layers.Dropout(0.5, seed=2)(x))
    x = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    model(x, training=True)
    checkpoint.write(tmp_path, model, 1, 0, 1.0, None, None)
    expected = np.asarray(model(x, training=True))
    reloaded = checkpoint.read(tmp_path).load_model()
    np.testing.assert_array_equal(reloaded(x, training=True), expected)
    plain = keras.models.load_model(tmp_path / checkpoint.DIR / checkpoint.MODEL)
    assert not np.array_equal(plain(x, training=True), expected)  # why rng.npz exists


@pytest.mark.parametrize("fill_mode", ["nearest", "constant"])
def test_separable_resampler_matches_image_projective_transform(fill_mode):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8))
    draws = rng.uniform(-1, 1, (64, NUM_DRAWS)).astype(np.float32)
    transforms = affine_matrices(draws, 32, 32, shift=0.3, zoom=0.3, horizontal_flip=True,
                                 rotation=0.0, shear=0.0)
    ours = resample_separable(x, transforms, fill_mode)
    x = tf.cast(x, tf.float32)
    theirs = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=[32, 32], fill_value=0.0,
        interpolation="BILINEAR", fill_mode=fill_mode.upper())
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), atol=1e-2)


@pytest.mark.parametrize("rotation, shear, fill_mode",
                         list(itertools.product([0.0, 20.0], [0.0, 10.0], ["reflect", "wrap"])))
def test_full_affine_path_matches_image_projective_transform(rotation, shear, fill_mode):
    rng = np.random.default_rng(2)
    x = rng.uniform(0, 255, (16, 32, 32, 3)).astype(np.float32)
    layer = RandomAffine(shift=0.1, zoom=0.1, rotation=rotation, shear=shear,
                         fill_mode=fill_mode, seed=5)
    ours = np.asarray(layer(x, training=True))
    draws = keras.random.uniform((16, NUM_DRAWS), -1.0, 1.0, seed=keras.random.SeedGenerator(5))
    transforms = affine_matrices(draws, 32, 32, shift=0.1, zoom=0.1, horizontal_flip=False,
                                 rotation=rotation, shear=shear)
    theirs = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=[32, 32], fill_value=0.0,
        interpolation="BILINEAR", fill_mode=fill_mode.upper())
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-2)


def test_transforms_compose_as_documented():
    """A pure flip maps column c to W-1-c; a pure shift moves content by the shift."""
    img = np.zeros((1, 8, 8, 1), np.float32)
    img[0, 2, 1, 0] = 1.0
    for flip in (-0.5, 0.5):
        draws = np.full((1, NUM_DRAWS), flip, np.float32)
        t = np.asarray(affine_matrices(draws, 8, 8, shift=0.0, zoom=0.0, horizontal_flip=True,
                                       rotation=0.0, shear=0.0))
        out = np.asarray(resample_separable(img, t, "constant"))[0, :, :, 0]
        col = 1 if t[0, 0] > 0 else 6
        assert out[2, col] == pytest.approx(1.0)
    t = np.array([[1, 0, -2, 0, 1, 0, 0, 0]], np.float32)  # input col = output col - 2
    out = np.asarray(resample_separable(img, t, "constant"))[0, :, :, 0]
    assert out[2, 3] == pytest.approx(1.0)
