"""Axis-aligned augmentation of in-memory uint8 images in one compiled loop (numba), for
the ``tf.data`` stream's threads on a CPU (:mod:`cvtrain.data.tfstream`).

The math is :func:`cvtrain.data.augment.resample_separable`'s (bilinear interpolation
one axis at a time, ``nearest`` or ``constant`` fill), with the same float32 operations
in the same order for the taps. Written as ``tf.data`` ops it takes a dozen passes over
every image (gathers, casts, products, a transpose), each a trip through memory; here each
image is read once, from where the dataset keeps it (the epoch's gather is the loop's
index), interpolated row by row in a small buffer and written once: under a quarter of
the ops' time a 32x32 image (``benchmarks/augment_ab.py --resample``).

numba is a dependency of cvtrain; where it cannot be imported the stream keeps its
``tf.data`` ops (:func:`available` says which, and why).
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError as _error:  # the stream keeps its tf.data ops
    numba, _MISSING = None, f"numba cannot be imported ({_error})"
else:
    _MISSING = None


def _jit(fn):
    """Compiled without the GIL on first call, cached on disk where numba finds a writable
    place (next to this file or the user's cache), else compiled once a process."""
    if numba is None:
        return fn
    try:
        return numba.njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # no writable cache location
        return numba.njit(nogil=True)(fn)


@_jit
def _taps(scale, offset, size, nearest, low, high, w_low, w_high):
    """:func:`cvtrain.data.augment._taps` for one image and axis, into the arrays given."""
    top = np.float32(size - 1)
    for t in range(size):
        source = np.float32(scale) * np.float32(t) + np.float32(offset)
        if nearest:
            source = min(max(source, np.float32(0.0)), top)
        floor = np.float32(np.floor(source))
        frac = source - floor
        lo = np.int32(floor)
        hi = lo + 1
        a = np.float32(1.0) - frac
        b = frac
        if not nearest:  # constant fill: taps outside the image weigh nothing
            if lo < 0 or lo >= size:
                a = np.float32(0.0)
            if hi < 0 or hi >= size:
                b = np.float32(0.0)
        low[t] = min(max(lo, 0), size - 1)
        high[t] = min(max(hi, 0), size - 1)
        w_low[t] = a
        w_high[t] = b


@_jit
def _kernel(images, index, transforms, nearest, out):
    """``out[b]`` = ``images[index[b]]`` (N, H, W, C uint8) under the axis-aligned
    transform ``transforms[b]`` (the 8-vector of affine_transform: m00, m02 for the
    columns, m11, m12 for the rows), as float32."""
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    row_len = width * channels
    flat = images.reshape(images.shape[0], height, row_len)
    out_rows = out.reshape(out.shape[0], height, row_len)
    row = np.empty(row_len, np.float32)
    y_low = np.empty(height, np.int32)
    y_high = np.empty(height, np.int32)
    y_wl = np.empty(height, np.float32)
    y_wh = np.empty(height, np.float32)
    x_low = np.empty(width, np.int32)
    x_high = np.empty(width, np.int32)
    x_wl = np.empty(width, np.float32)
    x_wh = np.empty(width, np.float32)
    for b in range(index.shape[0]):
        _taps(transforms[b, 4], transforms[b, 5], height, nearest, y_low, y_high, y_wl, y_wh)
        _taps(transforms[b, 0], transforms[b, 2], width, nearest, x_low, x_high, x_wl, x_wh)
        image = flat[index[b]]
        for i in range(height):
            # rows first: a whole row at once (contiguous, vectorised)
            upper, lower = image[y_low[i]], image[y_high[i]]
            p, q = y_wl[i], y_wh[i]
            for m in range(row_len):
                row[m] = p * np.float32(upper[m]) + q * np.float32(lower[m])
            # then the columns of that row
            target = out_rows[b, i]
            if channels == 3:  # unrolled: the common case measures 1.6x faster
                for j in range(width):
                    lo, hi = x_low[j] * 3, x_high[j] * 3
                    p, q = x_wl[j], x_wh[j]
                    target[3 * j] = p * row[lo] + q * row[hi]
                    target[3 * j + 1] = p * row[lo + 1] + q * row[hi + 1]
                    target[3 * j + 2] = p * row[lo + 2] + q * row[hi + 2]
            else:
                for j in range(width):
                    lo, hi = x_low[j] * channels, x_high[j] * channels
                    p, q = x_wl[j], x_wh[j]
                    for c in range(channels):
                        target[j * channels + c] = p * row[lo + c] + q * row[hi + c]


def available() -> str | None:
    """None when the compiled kernel can be used, else why not (one line)."""
    return _MISSING


def resample(images: np.ndarray, index: np.ndarray, transforms: np.ndarray,
             fill_mode: str) -> np.ndarray:
    """``images[index]`` (uint8, NHWC, C-contiguous) under the axis-aligned ``transforms``
    ((len(index), 8) float32, as :func:`cvtrain.data.augment.affine_matrices` makes them)
    with ``nearest`` or ``constant`` fill: float32 NHWC, what
    :func:`cvtrain.data.augment.augment` gives to float rounding."""
    if fill_mode not in ("nearest", "constant"):
        raise ValueError(f"fill_mode {fill_mode!r}: expected nearest or constant")
    out = np.empty((len(index), *images.shape[1:]), np.float32)
    _kernel(images, np.asarray(index, np.int64), np.asarray(transforms, np.float32),
            fill_mode == "nearest", out)
    return out


def augment(images: np.ndarray, index: np.ndarray, draws: np.ndarray, **options) -> np.ndarray:
    """:func:`cvtrain.data.augment.augment` of ``images[index]`` for axis-aligned options
    (shift, zoom, horizontal_flip, fill_mode ``nearest`` or ``constant``; rotation and
    shear 0), all in numpy and the compiled loop: the transforms from ``draws`` too (as
    ``tf.data`` ops they were some forty small ops a call)."""
    from cvtrain.data.augment import affine_matrices

    fill_mode = options.pop("fill_mode")
    transforms = affine_matrices(np.asarray(draws, np.float32), *images.shape[1:3], xp=np,
                                 **options)
    return resample(images, index, transforms, fill_mode)
