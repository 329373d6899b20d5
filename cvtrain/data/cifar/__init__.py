"""CIFAR-100: load either official edition from a local copy or the cache, or download it;
write a synthetic stand-in in exactly the official layout.

One concern a module:

* :mod:`~cvtrain.data.cifar.labels`: the official fine and coarse label names and the
  fine -> coarse map.
* :mod:`~cvtrain.data.cifar.format`: how the binary and python editions lay out their
  archives, folders and files.
* :mod:`~cvtrain.data.cifar.unpickle`: :class:`RestrictedUnpickler`, the only way the
  python edition's pickles are read.
* :mod:`~cvtrain.data.cifar.records`: binary records and python batches ->
  :class:`ImageData`.
* :mod:`~cvtrain.data.cifar.source`: finding and reading an archive or an extracted
  folder; :func:`load_cifar100`.
* :mod:`~cvtrain.data.cifar.download`: the official archives, downloaded (MD5-checked)
  into the cache.
* :mod:`~cvtrain.data.cifar.synth`: :func:`write_synthetic_cifar100`, built on the image
  generator shared with other synthetic datasets (:mod:`cvtrain.data.synthetic`).

Nothing in this package imports TensorFlow or Keras.
"""

from __future__ import annotations

from cvtrain.data.cifar.download import DOWNLOADS
from cvtrain.data.cifar.format import ARCHIVE_NAMES
from cvtrain.data.cifar.labels import COARSE_LABEL_NAMES, FINE_LABEL_NAMES, FINE_TO_COARSE
from cvtrain.data.cifar.records import ImageData
from cvtrain.data.cifar.source import load_cifar100
from cvtrain.data.cifar.synth import write_synthetic_cifar100
from cvtrain.data.cifar.unpickle import ALLOWED_GLOBALS, RestrictedUnpickler, safe_unpickle
from cvtrain.data.synthetic import synthesize_images

__all__ = [
    "ALLOWED_GLOBALS",
    "ARCHIVE_NAMES",
    "COARSE_LABEL_NAMES",
    "DOWNLOADS",
    "FINE_LABEL_NAMES",
    "FINE_TO_COARSE",
    "ImageData",
    "RestrictedUnpickler",
    "load_cifar100",
    "safe_unpickle",
    "synthesize_images",
    "write_synthetic_cifar100",
]
