"""A synthetic stand-in for CIFAR-100: :func:`write_synthetic_cifar100`, for tests and for
machines without the real data.

It writes either edition's archive in exactly the official layout (the python edition
pickled the way Python 2's cPickle did), with fixed metadata, so the same seed gives the
same archive bytes.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from cvtrain.data.cifar.format import (
    ARCHIVE_NAMES,
    EDITIONS,
    FOLDER_NAMES,
    IMAGE_BYTES,
    RECORD_BYTES,
)
from cvtrain.data.cifar.labels import (
    COARSE_LABEL_NAMES,
    FINE_LABEL_NAMES,
    FINE_TO_COARSE,
    NUM_FINE,
)
from cvtrain.data.cifar.unpickle import _numpy_reconstruct
from cvtrain.data.errors import _error, _reason
from cvtrain.data.synthetic import MARKER, MARKER_TEXT, _synthetic_split
from cvtrain.errors import UsageError


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes pickles the way Python 2's cPickle did at protocol 2.

    Python 2 ``str`` (bytes here, and the ASCII strs numpy's reducers use) become
    (SHORT_)BINSTRING, and numpy's globals get their classic Python 2 names.
    """

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def _binstring(self, data: bytes) -> None:
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)

    def save_bytes(self, obj: bytes) -> None:
        self._binstring(obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self._binstring(obj.encode("latin-1"))
        self.memoize(obj)

    def save_global(self, obj: Any, name: str | None = None) -> None:
        names = _py2_global_names().get(id(obj))
        if names is None:
            raise pickle.PicklingError(f"no Python-2 name for global {obj!r}")
        self.write(pickle.GLOBAL + f"{names[0]}\n{names[1]}\n".encode("ascii"))
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def _py2_global_names() -> dict[int, tuple[str, str]]:
    return {
        id(_numpy_reconstruct()): ("numpy.core.multiarray", "_reconstruct"),
        id(np.ndarray): ("numpy", "ndarray"),
        id(np.dtype): ("numpy", "dtype"),
    }


def _py2_pickle(obj: Any) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


_TAR_MTIME = 1_238_371_200  # fixed, so archives are byte-for-byte reproducible


def _write_targz(target: Path, folder: str, members: list[tuple[str, bytes]]) -> None:
    part = target.with_name(target.name + ".part")
    try:
        with (
            part.open("wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar,
        ):
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, _TAR_MTIME
            tar.addfile(info)
            for name, data in members:
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size, info.mode, info.mtime = len(data), 0o644, _TAR_MTIME
                tar.addfile(info, io.BytesIO(data))
        os.replace(part, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            part.unlink()
        raise _error(f"cannot write synthetic CIFAR-100 archive {target}: {_reason(exc)}") from exc


def write_synthetic_cifar100(
    dest: str | Path,
    classes: int = 25,
    train_per_class: int = 50,
    test_per_class: int = 10,
    fmt: str = "binary",
    seed: int = 0,
) -> Path:
    """Write a synthetic CIFAR-100 archive in the official layout; returns its path.

    ``dest/cifar-100-binary.tar.gz`` (``fmt="binary"``) or ``dest/cifar-100-python.tar.gz``
    (``fmt="python"``). Fine labels ``0..classes-1``, each a colour family combined with
    a spatial pattern (stripes, checkerboard, rings, disc, ...) under random position,
    phase, frequency, brightness and noise. The same seed gives the same images in both
    formats and the same archive bytes. A ``SYNTHETIC`` member beside the data files
    (:data:`cvtrain.data.synthetic.MARKER`) tells the loader what it is.
    """
    for label, value, low in (
        ("classes", classes, 1),
        ("train_per_class", train_per_class, 1),
        ("test_per_class", test_per_class, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UsageError(f"{label} must be an integer >= {low}, got {value!r}")
    if classes > NUM_FINE:
        raise UsageError(f"classes must be in 1..{NUM_FINE}, got {classes}")
    if fmt not in EDITIONS:
        raise UsageError(f"fmt must be 'binary' or 'python', got {fmt!r}")

    rng = np.random.default_rng(seed)
    x_train, y_train = _synthetic_split(classes, train_per_class, rng)
    x_test, y_test = _synthetic_split(classes, test_per_class, rng)
    coarse_of = np.asarray(FINE_TO_COARSE, dtype=np.uint8)

    dest = Path(dest).expanduser()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _error(f"cannot create {dest} for synthetic CIFAR-100: {_reason(exc)}") from exc
    target = dest / ARCHIVE_NAMES[fmt]
    folder = FOLDER_NAMES[fmt]

    def flat(x: np.ndarray) -> np.ndarray:  # NHWC -> (N, 3072) channel-major rows
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2).reshape(len(x), IMAGE_BYTES))

    if fmt == "binary":

        def records(x: np.ndarray, y: np.ndarray) -> bytes:
            rec = np.empty((len(x), RECORD_BYTES), dtype=np.uint8)
            rec[:, 0] = coarse_of[y]
            rec[:, 1] = y
            rec[:, 2:] = flat(x)
            return rec.tobytes()

        members = [
            ("coarse_label_names.txt", "".join(f"{n}\n" for n in COARSE_LABEL_NAMES).encode()),
            ("fine_label_names.txt", "".join(f"{n}\n" for n in FINE_LABEL_NAMES).encode()),
            ("test.bin", records(x_test, y_test)),
            ("train.bin", records(x_train, y_train)),
        ]
    else:

        def batch(x: np.ndarray, y: np.ndarray, title: str) -> bytes:
            names = [
                f"{FINE_LABEL_NAMES[label]}_s_{i:06d}.png".encode("ascii")
                for i, label in enumerate(y.tolist())
            ]
            return _py2_pickle(
                {
                    b"filenames": names,
                    b"batch_label": title.encode("ascii"),
                    b"fine_labels": y.tolist(),
                    b"coarse_labels": coarse_of[y].astype(int).tolist(),
                    b"data": flat(x),
                }
            )

        meta = {
            b"fine_label_names": [n.encode("ascii") for n in FINE_LABEL_NAMES],
            b"coarse_label_names": [n.encode("ascii") for n in COARSE_LABEL_NAMES],
        }
        members = [
            ("meta", _py2_pickle(meta)),
            ("test", batch(x_test, y_test, "testing batch 1 of 1")),
            ("train", batch(x_train, y_train, "training batch 1 of 1")),
        ]
    members.append((MARKER, MARKER_TEXT.encode()))  # the loader knows it is synthetic
    _write_targz(target, folder, members)
    return target
