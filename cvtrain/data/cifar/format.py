"""How CIFAR-100's two official editions lay out their archives, folders and files.

Both editions are read straight out of their ``.tar.gz`` (no extraction to disk) or from
an extracted folder:

* binary edition, ``cifar-100-binary.tar.gz``: ``train.bin`` / ``test.bin`` hold
  3,074-byte records (coarse label byte, fine label byte, 3,072 channel-major pixels);
  ``fine_label_names.txt`` has one name per line.
* python edition, ``cifar-100-python.tar.gz``: ``train`` / ``test`` / ``meta`` are
  Python-2 protocol-2 pickles (read only with
  :class:`~cvtrain.data.cifar.unpickle.RestrictedUnpickler`).
"""

from __future__ import annotations

EDITIONS: tuple[str, ...] = ("binary", "python")  # order = preference for edition="auto"
ARCHIVE_NAMES: dict[str, str] = {
    "binary": "cifar-100-binary.tar.gz",
    "python": "cifar-100-python.tar.gz",
}
FOLDER_NAMES: dict[str, str] = {"binary": "cifar-100-binary", "python": "cifar-100-python"}
#: The files of each edition that are read (and hashed for an extracted folder).
DATA_FILES: dict[str, tuple[str, ...]] = {
    "binary": ("train.bin", "test.bin", "fine_label_names.txt"),
    "python": ("train", "test", "meta"),
}

IMAGE_SIZE = 32
IMAGE_BYTES = 3 * IMAGE_SIZE * IMAGE_SIZE  # 3,072
RECORD_BYTES = 2 + IMAGE_BYTES  # 3,074
