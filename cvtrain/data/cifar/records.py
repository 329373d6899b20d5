"""Parsing CIFAR-100's files, whichever edition and wherever they were read from, into
:class:`ImageData`: binary records, python batches and the fine label names.

Only fine labels ``0..num_classes-1`` are kept, in file order; images become contiguous
uint8 NHWC arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvtrain.data.cifar.format import IMAGE_BYTES, IMAGE_SIZE, RECORD_BYTES
from cvtrain.data.cifar.labels import NUM_FINE
from cvtrain.data.cifar.unpickle import safe_unpickle
from cvtrain.data.errors import _error
from cvtrain.data.registry import LoadedData


@dataclass
class ImageData(LoadedData):
    """Images as uint8 NHWC arrays with int64 fine labels, plus where they came from."""

    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)


def _to_nhwc(flat: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Rows ``flat[keep]`` of 3,072 channel-major pixels -> contiguous (N, 32, 32, 3) uint8.

    Chunked and one channel at a time: about 3x faster than a transpose of the whole set.
    """
    rows = np.flatnonzero(keep)
    out = np.empty((len(rows), IMAGE_SIZE * IMAGE_SIZE, 3), dtype=np.uint8)
    for start in range(0, len(rows), 1024):
        chunk = flat[rows[start : start + 1024]].reshape(-1, 3, IMAGE_SIZE * IMAGE_SIZE)
        for channel in range(3):
            out[start : start + 1024, :, channel] = chunk[:, channel]
    return out.reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 3)


def _check_labels(labels: np.ndarray, where: str) -> None:
    if labels.size and (int(labels.min()) < 0 or int(labels.max()) >= NUM_FINE):
        bad = int(labels.max()) if int(labels.max()) >= NUM_FINE else int(labels.min())
        raise _error(f"{where} has fine label {bad}; expected CIFAR-100 labels 0..{NUM_FINE - 1}")


def _parse_binary_batch(buf: bytes, where: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    if len(buf) % RECORD_BYTES:
        raise _error(
            f"{where} is {len(buf):,} bytes, not a whole number of {RECORD_BYTES:,}-byte "
            f"CIFAR-100 binary records (truncated or not the binary edition)"
        )
    records = np.frombuffer(buf, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    fine = records[:, 1]
    _check_labels(fine, where)
    keep = fine < num_classes
    return _to_nhwc(records[:, 2:], keep), fine[keep].astype(np.int64)


def _parse_name_lines(buf: bytes, where: str) -> list[str]:
    try:
        text = buf.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _error(f"{where} is not a text file of label names, one per line: {exc}") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


def _field(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, dict):
        raise _error(f"{where} holds a {type(obj).__name__}, expected a dict with key {key!r}")
    for candidate in (key.encode("ascii"), key):
        if candidate in obj:
            return obj[candidate]
    keys = ", ".join(sorted(repr(k) for k in obj)[:8])
    raise _error(f"{where} has no {key!r} entry (keys: {keys})")


def _parse_python_batch(obj: Any, where: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    data = _field(obj, "data", where)
    labels = _field(obj, "fine_labels", where)
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != IMAGE_BYTES
    ):
        got = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise _error(f"{where}: 'data' is a {got}, expected a uint8 array of shape (N, 3072)")
    try:
        fine = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _error(f"{where}: 'fine_labels' is not a list of integers: {exc}") from exc
    if fine.shape != (data.shape[0],):
        raise _error(
            f"{where} has {data.shape[0]} images but 'fine_labels' of shape {fine.shape}; "
            "expected one label per image"
        )
    _check_labels(fine, where)
    keep = fine < num_classes
    return _to_nhwc(data, keep), fine[keep]


def _parse_python_names(obj: Any, where: str) -> list[str]:
    names = _field(obj, "fine_label_names", where)
    if not isinstance(names, list | tuple):
        raise _error(f"{where}: 'fine_label_names' is a {type(names).__name__}, expected a list")
    out = []
    for name in names:
        if isinstance(name, bytes):
            try:
                name = name.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _error(f"{where}: a fine label name is not text: {exc}") from exc
        if not isinstance(name, str):
            raise _error(f"{where}: 'fine_label_names' holds a {type(name).__name__}")
        out.append(name)
    return out


# files: basename -> (where, bytes)
_Files = dict[str, tuple[str, bytes]]


def _build(files: _Files, edition: str, num_classes: int, source: Path, sha256: str) -> ImageData:
    if edition == "binary":
        where, buf = files["fine_label_names.txt"]
        names = _parse_name_lines(buf, where)
        splits = []
        for member in ("train.bin", "test.bin"):
            where, buf = files[member]
            splits.append((where, *_parse_binary_batch(buf, where, num_classes)))
    else:
        where, buf = files["meta"]
        names = _parse_python_names(safe_unpickle(buf, where), where)
        splits = []
        for member in ("train", "test"):
            where, buf = files[member]
            splits.append(
                (where, *_parse_python_batch(safe_unpickle(buf, where), where, num_classes))
            )
    names_where = files["fine_label_names.txt" if edition == "binary" else "meta"][0]
    if len(names) < num_classes:
        raise _error(
            f"{names_where} lists {len(names)} fine label names; expected {NUM_FINE} "
            f"(at least the {num_classes} classes asked for)"
        )
    for where, _, y in splits:
        if y.size == 0:
            raise _error(f"{where} has no images with fine labels below {num_classes}")
    (_, x_train, y_train), (_, x_test, y_test) = splits
    return ImageData(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        class_names=list(names[:num_classes]),
        source=source,
        sha256=sha256,
    )
