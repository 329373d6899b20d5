"""Caltech-UCSD Birds (CUB-200 2010 and CUB-200-2011): file lists, a streaming image
pipeline, synthetic data.

One concern a module:

* :mod:`~cvtrain.data.birds.layout`: the 2010 and 2011 layouts, from a folder or a
  ``.tgz``, read into :class:`BirdsData` (:func:`load_cub200`); image checks and the
  fixed validation hold-out.
* :mod:`~cvtrain.data.birds.images`: the streams that decode images from disk as they
  are needed (tf.data on TensorFlow, Pillow in threads elsewhere), and naming the file
  behind a decode failure (TensorFlow is imported inside the functions only).
* :mod:`~cvtrain.data.birds.decode`: one image decoded (Pillow), resized and
  preprocessed in numpy, to TensorFlow's pixels.
* :mod:`~cvtrain.data.birds.synth`: :func:`write_synthetic_cub200`, a small learnable
  stand-in with real JPEG files.
"""

from __future__ import annotations

from cvtrain.data.birds.images import (
    IMAGENET_BGR_MEAN,
    find_unreadable,
    image_errors,
    image_stream,
    load_image,
    training_image_stream,
)
from cvtrain.data.birds.layout import BirdsData, check_image_bytes, load_cub200, split_indices
from cvtrain.data.birds.synth import write_synthetic_cub200

__all__ = [
    "IMAGENET_BGR_MEAN",
    "BirdsData",
    "check_image_bytes",
    "find_unreadable",
    "image_errors",
    "image_stream",
    "load_cub200",
    "load_image",
    "split_indices",
    "training_image_stream",
    "write_synthetic_cub200",
]
