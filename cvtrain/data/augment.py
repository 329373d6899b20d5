"""Random affine augmentation as a Keras layer, written once with ``keras.ops`` so it runs
inside the compiled training step on every backend (TensorFlow, JAX) and device.

Each training batch gets one projective transform per image composing shift, zoom,
horizontal flip, rotation and shear about the image centre, applied in a single
resampling, as the coursework's ImageDataGenerator does. Axis-aligned transforms (shift,
zoom, flip: no rotation or shear) with ``nearest`` or ``constant`` fill are resampled one
axis at a time (bilinear interpolation is separable), two row gathers and a lerp per axis;
anything else goes through ``keras.ops.image.affine_transform``.

Randomness comes from the layer's ``SeedGenerator``, whose state is a model variable: it
is saved with every checkpoint, so a resumed run draws exactly what an uninterrupted one
would have. Outside training the layer only casts its input to float32.
"""

from __future__ import annotations

import math

import keras
from keras import ops

FILL_MODES = ("nearest", "reflect", "wrap", "constant")


def affine_matrices(batch, height: int, width: int, *, shift: float, zoom: float,
                    horizontal_flip: bool, rotation: float, shear: float, seed):
    """Per-image 8-vector projective transforms (output pixel -> input pixel), the format of
    ``keras.ops.image.affine_transform``; ``seed`` is a SeedGenerator (advanced 7 times)."""

    def uniform(low, high):
        return keras.random.uniform((batch,), low, high, seed=seed)

    zeros = ops.zeros((batch,))
    ones = ops.ones((batch,))
    draws = [uniform(-1.0, 1.0) for _ in range(7)]  # drawn always: a fixed RNG sequence
    ty = draws[0] * (shift * height)
    tx = draws[1] * (shift * width)
    zy = ones + draws[2] * zoom
    zx = ones + draws[3] * zoom
    flip = ops.where(draws[4] < 0.0, -1.0, 1.0) if horizontal_flip else ones
    theta = draws[5] * (rotation * math.pi / 180.0)
    shear_angle = draws[6] * (shear * math.pi / 180.0)
    # M = Z . F . Shear . R (2x2); Shear . R = [[1, -sin s], [0, cos s]] . [[cos, -sin], [sin, cos]]
    cos_t, sin_t = ops.cos(theta), ops.sin(theta)
    sh_a, sh_c = -ops.sin(shear_angle), ops.cos(shear_angle)
    m00 = zx * flip * (cos_t + sh_a * sin_t)
    m01 = zx * flip * (-sin_t + sh_a * cos_t)
    m10 = zy * sh_c * sin_t
    m11 = zy * sh_c * cos_t
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    # input = c + M (output - c) + t
    a2 = cx - m00 * cx - m01 * cy + tx
    b2 = cy - m10 * cx - m11 * cy + ty
    return ops.stack([m00, m01, a2, m10, m11, b2, zeros, zeros], axis=1)


def _resample_axis(x, scale, offset, axis: int, fill_mode: str):
    """Linear interpolation of ``x`` (NHWC) along ``axis`` at ``source = scale * target +
    offset``, one map per image: two gathers and a lerp."""
    size = x.shape[axis]
    target = ops.arange(size, dtype="float32")
    source = scale[:, None] * target[None, :] + offset[:, None]  # (B, size)
    if fill_mode == "nearest":
        source = ops.clip(source, 0.0, size - 1.0)
    low = ops.floor(source)
    frac = source - low
    low_i = ops.cast(low, "int32")
    high_i = low_i + 1
    w_low, w_high = 1.0 - frac, frac
    if fill_mode == "constant":  # taps outside the image read zeros
        w_low = w_low * ops.cast((low_i >= 0) & (low_i < size), "float32")
        w_high = w_high * ops.cast((high_i >= 0) & (high_i < size), "float32")
    shape = [-1, 1, 1, 1]
    shape[axis] = size
    low_i = ops.reshape(ops.clip(low_i, 0, size - 1), shape)
    high_i = ops.reshape(ops.clip(high_i, 0, size - 1), shape)
    a = ops.take_along_axis(x, low_i, axis=axis)
    b = ops.take_along_axis(x, high_i, axis=axis)
    return a * ops.reshape(w_low, shape) + b * ops.reshape(w_high, shape)


def resample_separable(x, transforms, fill_mode: str):
    """Axis-aligned transforms (m01 = m10 = 0), one axis at a time: what
    ``affine_transform`` gives for shift, zoom and flip (tested), with fewer operations."""
    x = _resample_axis(x, transforms[:, 4], transforms[:, 5], 1, fill_mode)
    return _resample_axis(x, transforms[:, 0], transforms[:, 2], 2, fill_mode)


@keras.saving.register_keras_serializable(package="cvtrain")
class RandomAffine(keras.layers.Layer):
    """Shift, zoom, flip, rotation and shear of training batches in one resampling."""

    def __init__(self, shift: float = 0.0, zoom: float = 0.0, horizontal_flip: bool = False,
                 rotation: float = 0.0, shear: float = 0.0, fill_mode: str = "nearest",
                 seed: int | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # resample in float32 whatever the policy
        super().__init__(**kwargs)
        if fill_mode not in FILL_MODES:
            raise ValueError(f"fill_mode {fill_mode!r}: expected one of {FILL_MODES}")
        self.shift, self.zoom, self.rotation, self.shear = shift, zoom, rotation, shear
        self.horizontal_flip, self.fill_mode, self.seed = horizontal_flip, fill_mode, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def separable(self) -> bool:
        return not self.rotation and not self.shear and self.fill_mode in ("nearest", "constant")

    def call(self, images, training=None):
        x = ops.cast(images, "float32")
        if not training:
            return x
        height, width = x.shape[1], x.shape[2]
        transforms = affine_matrices(ops.shape(x)[0], height, width, shift=self.shift,
                                     zoom=self.zoom, horizontal_flip=self.horizontal_flip,
                                     rotation=self.rotation, shear=self.shear,
                                     seed=self.seed_generator)
        if self.separable:
            return resample_separable(x, transforms, self.fill_mode)
        return ops.image.affine_transform(x, transforms, interpolation="bilinear",
                                          fill_mode=self.fill_mode, fill_value=0.0,
                                          data_format="channels_last")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "shift": self.shift, "zoom": self.zoom,
                "horizontal_flip": self.horizontal_flip, "rotation": self.rotation,
                "shear": self.shear, "fill_mode": self.fill_mode, "seed": self.seed}
