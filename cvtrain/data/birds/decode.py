"""The birds' images decoded and resized without TensorFlow: Pillow decodes (the decoder
``cvtrain predict`` uses), numpy resizes as ``tf.image.resize`` and the Keras ``Resizing``
layer do (bilinear, half-pixel centres, no antialiasing), so that training, feature
extraction and prediction see the same pixels on every backend.

Pillow's JPEG decoding is TensorFlow's with ``dct_method="INTEGER_ACCURATE"`` to the bit;
TensorFlow's default (``INTEGER_FAST``) differs by up to a few levels. Pillow's own resize
widens its filter when it shrinks (an antialiased resize): it is not used here.
"""

from __future__ import annotations

import numpy as np

from cvtrain.errors import DataError

# ResNet50's preprocess_input ("caffe" mode): RGB -> BGR, minus the ImageNet BGR means
IMAGENET_BGR_MEAN = np.array((103.939, 116.779, 123.68), np.float32)


def read_rgb(path) -> np.ndarray:
    """``path`` decoded to uint8 RGB (height, width, 3): grey and palette images become RGB,
    an animation its first frame. A file that cannot be read is a DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc.__class__.__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None


def _taps(size_in: int, size_out: int):
    """Bilinear taps along one axis with half-pixel centres, as TensorFlow's
    ``ResizeBilinear(half_pixel_centers=True)``: each output index's two source indices
    and the weight of the upper one."""
    scale = np.float32(size_in / size_out)
    source = (np.arange(size_out, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    low = np.floor(source)
    frac = (source - low).astype(np.float32)
    low_i = np.clip(low.astype(np.int64), 0, size_in - 1)
    high_i = np.clip(low.astype(np.int64) + 1, 0, size_in - 1)
    return low_i, high_i, frac


def _along(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Linear interpolation of ``x`` along ``axis`` (0 or 1) to ``size``, float32:
    ``a + (b - a) * frac`` as TensorFlow computes it, in place where it can."""
    low, high, frac = _taps(x.shape[axis], size)
    a = np.take(x, low, axis=axis).astype(np.float32, copy=False)
    d = np.take(x, high, axis=axis).astype(np.float32)
    d -= a
    d *= frac[:, None, None] if axis == 0 else frac[None, :, None]
    d += a
    return d


def resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` (H, W, C, any dtype) resized to (size, size, C) float32, bilinear with
    half-pixel centres and no antialiasing: ``tf.image.resize(image, [size, size])`` to
    float rounding. The axis that shrinks the image more goes first (fewer values to
    carry into the second): about 1 ms for a 500x375 photograph to 224."""
    height, width = image.shape[:2]
    # after the first axis: rows first leaves (size, width) values, columns first (height, size)
    if width <= height:
        return _along(_along(image, size, 0), size, 1)
    return _along(_along(image, size, 1), size, 0)


def load_image(path, image_size: int) -> np.ndarray:
    """Decoded, resized and preprocessed as ResNet50 expects (BGR minus the ImageNet
    means), float32 (image_size, image_size, 3)."""
    image = resize_bilinear(read_rgb(path), image_size)
    return image[..., ::-1] - IMAGENET_BGR_MEAN
