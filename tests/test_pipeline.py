"""The tf.data pipeline: split before fitting, statistics from training only, augmentation
on training batches only, the fast resampler equal to TensorFlow's, repeatable streams."""

from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from cvtrain.data.cifar.dataset import Augment
from cvtrain.data.pipeline import (
    augment_matrices,
    build_splits,
    channel_stats,
    resample_separable,
    split_train_validation,
)
from cvtrain.errors import DataError


def fake_data(n_train=200, n_test=40, seed=0):
    rng = np.random.default_rng(seed)
    return SimpleNamespace(
        x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        y_train=rng.integers(0, 5, n_train), x_test=rng.integers(0, 256, (n_test, 32, 32, 3),
                                                                dtype=np.uint8),
        y_test=rng.integers(0, 5, n_test))


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
    x_train = np.concatenate([b[0].numpy() for b in splits.train])
    assert abs(x_train.mean()) < 0.05 and abs(x_train.std() - 1) < 0.05
    x_val = np.concatenate([b[0].numpy() for b in splits.validation])
    np.testing.assert_allclose(x_val, (1.0 - mean) / std * np.ones_like(x_val), rtol=1e-4)


def test_augmentation_touches_training_batches_only_and_repeats_with_the_seed():
    data = fake_data()
    aug = Augment(shift=0.1, zoom=0.1, horizontal_flip=True)
    a = build_splits(data, 5, 0.1, False, aug, 16, 2, seed=4)
    b = build_splits(data, 5, 0.1, False, aug, 16, 2, seed=4)
    plain = build_splits(data, 5, 0.1, False, Augment(), 16, 2, seed=4)
    first = [x.numpy() for x, _ in a.train]
    assert len(first) == 2 * a.steps_per_epoch and sum(len(x) for x in first) == 2 * 180
    np.testing.assert_array_equal(first[3], next(iter(b.train.skip(3)))[0].numpy())
    # same order of images, different pixels: the transforms act on training batches
    assert not np.allclose(first[0], next(iter(plain.train))[0].numpy())
    for split in ("validation", "test"):
        np.testing.assert_array_equal(
            np.concatenate([x.numpy() for x, _ in getattr(a, split)]),
            np.concatenate([x.numpy() for x, _ in getattr(plain, split)]))
    # epochs see different orders
    labels = [y.numpy().argmax(1) for _, y in a.train]
    assert not np.array_equal(np.concatenate(labels[:a.steps_per_epoch]),
                              np.concatenate(labels[a.steps_per_epoch:]))


def test_resume_from_an_epoch_replays_the_same_batches():
    data = fake_data()
    aug = Augment(shift=0.1, horizontal_flip=True)
    full = build_splits(data, 5, 0.1, False, aug, 16, 3, seed=9)
    resumed = build_splits(data, 5, 0.1, False, aug, 16, 3, seed=9, initial_epoch=2)
    tail = [x.numpy() for x, _ in full.train][2 * full.steps_per_epoch:]
    np.testing.assert_array_equal(np.concatenate(tail),
                                  np.concatenate([x.numpy() for x, _ in resumed.train]))


@pytest.mark.parametrize("fill_mode", ["nearest", "constant"])
def test_separable_resampler_matches_image_projective_transform(fill_mode):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.uniform(0, 255, (64, 32, 32, 3)).astype(np.float32))
    aug = Augment(shift=0.3, zoom=0.3, horizontal_flip=True, fill_mode=fill_mode)
    transforms = augment_matrices(tf, 64, 32, 32, aug, tf.constant([3, 5], tf.int64))
    ours = resample_separable(tf, x, transforms, fill_mode)
    theirs = tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=[32, 32], fill_value=0.0,
        interpolation="BILINEAR", fill_mode=fill_mode.upper())
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-2)


def test_transforms_compose_as_documented():
    """A pure flip maps column c to W-1-c; a pure shift moves content by the shift."""
    img = np.zeros((1, 8, 8, 1), np.float32)
    img[0, 2, 1, 0] = 1.0
    x = tf.constant(img)
    flip_only = Augment(horizontal_flip=True)
    for seed in range(8):
        t = augment_matrices(tf, 1, 8, 8, flip_only, tf.constant([seed, 0], tf.int64))
        out = resample_separable(tf, x, t, "constant").numpy()[0, :, :, 0]
        col = 1 if t.numpy()[0, 0] > 0 else 6
        assert out[2, col] == pytest.approx(1.0)
    t = tf.constant([[1, 0, -2, 0, 1, 0, 0, 0]], tf.float32)  # input col = output col - 2
    out = resample_separable(tf, x, t, "constant").numpy()[0, :, :, 0]
    assert out[2, 3] == pytest.approx(1.0)
