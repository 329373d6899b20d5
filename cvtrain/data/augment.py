"""Random affine augmentation written once with ``keras.ops``: the same math runs where it
measures fastest on each backend (see :mod:`cvtrain.data.pipeline`): inside the compiled
training step as the :class:`RandomAffine` layer (JAX: on the accelerator), or in the
``tf.data`` stream's parallel threads (TensorFlow, where it overlaps the step).

Each training image gets one projective transform composing shift, zoom, horizontal flip,
rotation and shear about the image centre, applied in a single resampling, as the
coursework's ImageDataGenerator does. Axis-aligned transforms (shift, zoom, flip) with
``nearest`` or ``constant`` fill are resampled one axis at a time (bilinear interpolation
is separable), as two small matrix products in a compiled step, or in ``tf.data`` threads
as two gathers compiled by XLA (:func:`cvtrain.data.tfstream.resample`); anything else goes
through ``keras.ops.image.affine_transform``.

The random numbers come in as ``draws``: from the layer's ``SeedGenerator`` (its state is
saved with each checkpoint, see :mod:`cvtrain.training.checkpoint`) or from a stateless
generator keyed by (seed, epoch, batch); either way a resumed run draws exactly what an
uninterrupted one would have.
"""

from __future__ import annotations

import math

import keras
from keras import ops

FILL_MODES = ("nearest", "reflect", "wrap", "constant")


#: uniform draws in [-1, 1) each image's transform takes: shift y, shift x, zoom y, zoom x,
#: flip, rotation, shear (always all seven, so the random sequence does not depend on the
#: options)
NUM_DRAWS = 7


def affine_matrices(draws, height: int, width: int, *, shift: float, zoom: float,
                    horizontal_flip: bool, rotation: float, shear: float):
    """Per-image 8-vector projective transforms (output pixel -> input pixel), the format of
    ``keras.ops.image.affine_transform``, from ``draws`` of shape (batch, NUM_DRAWS)."""
    d = [draws[:, i] for i in range(NUM_DRAWS)]
    ones = ops.ones_like(d[0])
    zeros = ops.zeros_like(d[0])
    ty = d[0] * (shift * height)
    tx = d[1] * (shift * width)
    zy = ones + d[2] * zoom
    zx = ones + d[3] * zoom
    flip = ops.where(d[4] < 0.0, -ones, ones) if horizontal_flip else ones
    theta = d[5] * (rotation * math.pi / 180.0)
    shear_angle = d[6] * (shear * math.pi / 180.0)
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


def separable(options: dict) -> bool:
    """Axis-aligned (no rotation or shear) with a fill the separable resampler implements."""
    return (not options["rotation"] and not options["shear"]
            and options["fill_mode"] in ("nearest", "constant"))


def augment(images, draws, **options):
    """``images`` (NHWC) transformed by the matrices ``draws`` make, in float32 (NHWC);
    options as :class:`RandomAffine`'s (shift, zoom, horizontal_flip, rotation, shear,
    fill_mode)."""
    fill_mode = options.pop("fill_mode")
    transforms = affine_matrices(draws, images.shape[1], images.shape[2], **options)
    if separable({**options, "fill_mode": fill_mode}):
        return resample_separable(images, transforms, fill_mode)
    return project(images, transforms, fill_mode)


def project(images, transforms, fill_mode: str):
    """``images`` (NHWC) under any ``transforms`` (as :func:`affine_matrices` makes them),
    bilinear, in one resampling: ``keras.ops.image.affine_transform`` (on TensorFlow the op
    ``ImageProjectiveTransformV3``), float32."""
    return ops.image.affine_transform(ops.cast(images, "float32"), transforms,
                                      interpolation="bilinear", fill_mode=fill_mode,
                                      fill_value=0.0, data_format="channels_last")


def axis_taps(scale, offset, size: int, fill_mode: str):
    """Linear interpolation along one axis at ``source = scale * target + offset`` (one map
    per image): each output index's two source taps and their weights, (batch, size) each.
    Taps outside the image are clamped to the edge (``nearest``) or weigh nothing
    (``constant``)."""
    target = ops.arange(size, dtype="float32")
    source = scale[:, None] * target[None, :] + offset[:, None]  # (B, size)
    if fill_mode == "nearest":
        source = ops.clip(source, 0.0, size - 1.0)
    low = ops.floor(source)
    frac = source - low
    low_i = ops.cast(low, "int32")
    high_i = low_i + 1
    w_low, w_high = 1.0 - frac, frac
    if fill_mode == "constant":
        w_low = w_low * ops.cast((low_i >= 0) & (low_i < size), "float32")
        w_high = w_high * ops.cast((high_i >= 0) & (high_i < size), "float32")
    return ops.clip(low_i, 0, size - 1), ops.clip(high_i, 0, size - 1), w_low, w_high


def _resample_axis(x, scale, offset, axis: int, fill_mode: str):
    """Interpolation of ``x`` (NHWC, float32) along ``axis`` (1: rows, 2: columns) as a
    matrix product: each image's (size x size) matrix has the two weights of every output
    index on its two source taps. Dense, but a matmul is what compiled steps on every
    device run fastest, where per-pixel gathers are slow."""
    size = x.shape[axis]
    low_i, high_i, w_low, w_high = axis_taps(scale, offset, size, fill_mode)
    matrix = (ops.one_hot(low_i, size, dtype="float32") * w_low[..., None]
              + ops.one_hot(high_i, size, dtype="float32") * w_high[..., None])
    if axis == 1:
        return ops.einsum("bij,bjwc->biwc", matrix, x)
    return ops.einsum("bij,bhjc->bhic", matrix, x)


def resample_separable(x, transforms, fill_mode: str):
    """Axis-aligned transforms (m01 = m10 = 0), one axis at a time, as matrix products: what
    ``affine_transform`` gives for shift, zoom and flip (tested), with fewer operations."""
    x = ops.cast(x, "float32")
    x = _resample_axis(x, transforms[:, 4], transforms[:, 5], 1, fill_mode)
    return _resample_axis(x, transforms[:, 0], transforms[:, 2], 2, fill_mode)


@keras.saving.register_keras_serializable(package="cvtrain")
class RandomAffine(keras.layers.Layer):
    """Shift, zoom, flip, rotation and shear of training batches in one resampling; outside
    training only a cast to float32."""

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
    def options(self) -> dict:
        return {"shift": self.shift, "zoom": self.zoom, "horizontal_flip": self.horizontal_flip,
                "rotation": self.rotation, "shear": self.shear, "fill_mode": self.fill_mode}

    def call(self, images, training=None):
        if not training:
            return ops.cast(images, "float32")
        draws = keras.random.uniform((ops.shape(images)[0], NUM_DRAWS), -1.0, 1.0,
                                     seed=self.seed_generator)
        return augment(images, draws, **self.options)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), **self.options, "seed": self.seed}
