"""CIFAR-100: load either official edition from a local copy or the cache, or download it.

Both official editions are read straight out of their ``.tar.gz`` (no extraction to
disk) or from an extracted folder:

* binary edition, ``cifar-100-binary.tar.gz``: ``train.bin`` / ``test.bin`` hold
  3,074-byte records (coarse label byte, fine label byte, 3,072 channel-major pixels);
  ``fine_label_names.txt`` has one name per line.
* python edition, ``cifar-100-python.tar.gz``: ``train`` / ``test`` / ``meta`` are
  Python-2 protocol-2 pickles. They are only ever read with :class:`RestrictedUnpickler`,
  which resolves nothing but the few numpy globals these files need.

:func:`write_synthetic_cifar100` writes a small, learnable stand-in in exactly the
official layout, for tests and for machines without the real data.

This module must not import TensorFlow or Keras.
"""

from __future__ import annotations

import _compat_pickle
import contextlib
import gzip
import hashlib
import http.client
import io
import os
import pickle
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np

from cvtrain.errors import DataError, UsageError
from cvtrain.report import byte_progress

__all__ = [
    "ALLOWED_GLOBALS",
    "ARCHIVE_NAMES",
    "COARSE_LABEL_NAMES",
    "DOWNLOADS",
    "FINE_LABEL_NAMES",
    "FINE_TO_COARSE",
    "ImageData",
    "RestrictedUnpickler",
    "cache_dir",
    "load_cifar100",
    "safe_unpickle",
    "write_synthetic_cifar100",
]

# --------------------------------------------------------------------------- constants

FINE_LABEL_NAMES: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip

COARSE_LABEL_NAMES: tuple[str, ...] = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
)  # fmt: skip

_SUPERCLASS_MEMBERS: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}

#: Official coarse (superclass) label of each fine label, indexed by fine label.
FINE_TO_COARSE: tuple[int, ...] = tuple(
    next(COARSE_LABEL_NAMES.index(c) for c, fines in _SUPERCLASS_MEMBERS.items() if f in fines)
    for f in FINE_LABEL_NAMES
)

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
#: Official download locations; tests monkeypatch the entries.
DOWNLOADS: dict[str, dict[str, str]] = {
    "binary": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        "md5": "03b5dce01913d631647c71ecec9e9cb8",
    },
    "python": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
    },
}
DOWNLOAD_TIMEOUT = 60.0  # seconds, per socket operation

IMAGE_SIZE = 32
IMAGE_BYTES = 3 * IMAGE_SIZE * IMAGE_SIZE  # 3,072
RECORD_BYTES = 2 + IMAGE_BYTES  # 3,074
NUM_FINE = len(FINE_LABEL_NAMES)

#: The only globals :class:`RestrictedUnpickler` resolves, as ``module.name``.
ALLOWED_GLOBALS: frozenset[str] = frozenset(
    {
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.ndarray",
        "numpy.dtype",
        "_codecs.encode",
    }
)
_LATIN1_NAMES = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"})

_ARCHIVE_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, ValueError)


def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _error(message: str) -> DataError:
    return DataError(_one_line(message, limit=1000))


def _reason(exc: BaseException) -> str:
    text = _one_line(str(exc), limit=200)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------- public types


@dataclass
class ImageData:
    """Images as uint8 NHWC arrays with int64 fine labels, plus where they came from."""

    x_train: np.ndarray = field(repr=False)
    y_train: np.ndarray = field(repr=False)
    x_test: np.ndarray = field(repr=False)
    y_test: np.ndarray = field(repr=False)
    class_names: list[str]
    source: Path
    sha256: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def cache_dir() -> Path:
    """``$CVTRAIN_CACHE``, else ``$XDG_CACHE_HOME/cvtrain``, else ``~/.cache/cvtrain``.

    Not created here; whoever writes to it creates it.
    """
    explicit = os.environ.get("CVTRAIN_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "cvtrain"
    return Path.home() / ".cache" / "cvtrain"


# --------------------------------------------------------------------------- safe unpickling


def _numpy_reconstruct() -> Callable[..., Any]:
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2 without the numpy._core alias
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


def _python3_name(module: str, name: str) -> str:
    """What a Python 2 global name means in Python 3 (e.g. ``__builtin__.eval``)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`.

    Any other global (``os.system``, ``builtins.eval``, ...) raises :class:`DataError`
    before it can be called. ``_codecs.encode`` (how Python 3 writes bytes at protocol 2)
    is further limited to latin-1 on a str.
    """

    def __init__(self, file: BinaryIO, *, source: str = "<pickle>", encoding: str = "bytes"):
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        if qualified in (
            "numpy.core.multiarray._reconstruct",
            "numpy._core.multiarray._reconstruct",
        ):
            return _numpy_reconstruct()
        if qualified == "numpy.ndarray":
            return np.ndarray
        if qualified == "numpy.dtype":
            return np.dtype
        if qualified == "_codecs.encode":
            return self._latin1_encode
        shown = _one_line(qualified, 120)
        modern = _python3_name(module, name)
        if modern != qualified:
            shown += f" (Python 3: {_one_line(modern, 120)})"
        raise _error(
            f"refused to unpickle global {shown} in {self.source}: "
            f"CIFAR-100 pickles only need {', '.join(sorted(ALLOWED_GLOBALS))}"
        )

    def _latin1_encode(self, obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if (
            not isinstance(obj, str)
            or not isinstance(encoding, str)
            or encoding.lower() not in _LATIN1_NAMES
            or errors != "strict"
        ):
            raise _error(
                f"refused to unpickle a call of _codecs.encode with encoding {encoding!r:.40} "
                f"in {self.source}: expected latin1-encoded bytes"
            )
        return obj.encode("latin-1")


def safe_unpickle(data: bytes, source: str) -> Any:
    """Unpickle ``data`` (a Python-2 or 3 pickle) with :class:`RestrictedUnpickler`.

    ``source`` names the file in error messages. Every failure is a :class:`DataError`.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=source).load()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of untrusted data is a DataError
        raise _error(
            f"{source} is not a readable CIFAR-100 pickle (expected a protocol-2 pickle of a "
            f"dict): {_reason(exc)}"
        ) from exc


# --------------------------------------------------------------------------- parsing


def _check_load_args(num_classes: Any, edition: Any) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise UsageError(f"num_classes must be an integer 1..{NUM_FINE}, got {num_classes!r}")
    if not 1 <= int(num_classes) <= NUM_FINE:
        raise UsageError(f"num_classes must be in 1..{NUM_FINE}, got {num_classes}")
    if edition not in ("auto", *EDITIONS):
        raise UsageError(f"edition must be 'auto', 'binary' or 'python', got {edition!r}")


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


# --------------------------------------------------------------------------- reading sources


class _HashingReader:
    """A read-only file wrapper that hashes everything read through it."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        self.hash.update(chunk)
        return chunk

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _safe_member_path(name: str) -> PurePosixPath | None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return path


def _expected_members() -> str:
    return " or ".join(f"{FOLDER_NAMES[ed]}/{{{','.join(DATA_FILES[ed])}}}" for ed in EDITIONS)


def _read_archive(archive: Path, edition: str) -> tuple[str, _Files, str]:
    """Stream the archive once: returns (edition found, files, sha256 of the archive)."""
    wanted = {name for names in DATA_FILES.values() for name in names}
    groups: dict[str, _Files] = {}
    seen: list[str] = []
    try:
        with archive.open("rb") as raw:
            reader = _HashingReader(raw)
            with tarfile.open(fileobj=reader, mode="r|*", bufsize=1 << 20) as tar:
                for member in tar:
                    if len(seen) < 6:
                        seen.append(member.name)
                    path = _safe_member_path(member.name)
                    # Never extracted to disk; unsafe names, links and devices are ignored.
                    if path is None or not member.isfile() or path.name not in wanted:
                        continue
                    handle = tar.extractfile(member)
                    data = handle.read() if handle is not None else b""
                    if len(data) != member.size:
                        raise _error(
                            f"{archive}:{member.name} is truncated: read {len(data):,} of "
                            f"{member.size:,} bytes"
                        )
                    group = groups.setdefault(str(path.parent), {})
                    group[path.name] = (f"{archive}:{member.name}", data)
            reader.drain()
    except DataError:
        raise
    except _ARCHIVE_ERRORS as exc:
        raise _error(
            f"{archive} is not a readable CIFAR-100 archive (expected {ARCHIVE_NAMES['binary']} "
            f"or {ARCHIVE_NAMES['python']}, a tar.gz): {_reason(exc)}"
        ) from exc

    complete = {
        ed: files
        for ed in EDITIONS
        for _, files in sorted(groups.items())
        if all(name in files for name in DATA_FILES[ed])
    }
    order = EDITIONS if edition == "auto" else (edition,)
    for ed in order:
        if ed in complete:
            files = {name: complete[ed][name] for name in DATA_FILES[ed]}
            return ed, files, reader.hash.hexdigest()
    if complete:
        other = next(iter(complete))
        raise _error(
            f"{archive} holds the {other} edition of CIFAR-100, but edition {edition!r} was "
            f"asked for; expected {ARCHIVE_NAMES[edition]} (members "
            f"{FOLDER_NAMES[edition]}/{{{','.join(DATA_FILES[edition])}}})"
        )
    found = ", ".join(seen) + (", ..." if len(seen) == 6 else "") if seen else "nothing"
    raise _error(
        f"{archive} is not a CIFAR-100 archive: expected members {_expected_members()}, "
        f"found {found}"
    )


def _read_folder(folder: Path, edition: str) -> tuple[str, _Files, str]:
    files: _Files = {}
    lines = []
    for name in sorted(DATA_FILES[edition]):
        path = folder / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise _error(
                f"cannot read {path} (part of the extracted {edition} edition of CIFAR-100): "
                f"{_reason(exc)}"
            ) from exc
        files[name] = (str(path), data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    digest = hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()
    return edition, files, digest


def _folder_editions(folder: Path) -> list[str]:
    """Editions whose extracted files are (at least partly) right inside ``folder``."""
    found = []
    if (folder / "train.bin").is_file() or (folder / "test.bin").is_file():
        found.append("binary")
    if (folder / "meta").is_file() or (
        (folder / "train").is_file() and (folder / "test").is_file()
    ):
        found.append("python")
    return found


def _candidates(folder: Path) -> list[tuple[str, Path, str]]:
    """(edition, path, kind) for everything CIFAR-100-like in ``folder``, preferred first."""
    out: list[tuple[str, Path, str]] = []
    inside = _folder_editions(folder)
    for ed in EDITIONS:
        if ed in inside:
            out.append((ed, folder, "folder"))
        sub = folder / FOLDER_NAMES[ed]
        if sub.is_dir() and ed in _folder_editions(sub):
            out.append((ed, sub, "folder"))
        archive = folder / ARCHIVE_NAMES[ed]
        if archive.is_file():
            out.append((ed, archive, "archive"))
    return out


def _missing(folder: Path, edition: str) -> list[str]:
    return [name for name in DATA_FILES[edition] if not (folder / name).is_file()]


def _resolve_folder(folder: Path, edition: str) -> tuple[Path, str, str]:
    """Pick what to read in ``folder``: (path, "folder" | "archive", edition)."""
    found = _candidates(folder)
    order = EDITIONS if edition == "auto" else (edition,)
    incomplete = None
    for ed in order:
        for cand_ed, path, kind in found:
            if cand_ed != ed:
                continue
            if kind == "archive" or not _missing(path, ed):
                return path, kind, ed
            incomplete = incomplete or (ed, path)
    if incomplete is not None:
        ed, path = incomplete
        raise _error(
            f"{path} looks like an extracted {ed} edition of CIFAR-100 but lacks "
            f"{', '.join(_missing(path, ed))}; expected {', '.join(DATA_FILES[ed])}"
        )
    if found:
        others = ", ".join(str(path) for _, path, _ in found)
        raise _error(
            f"{folder} holds only the {found[0][0]} edition of CIFAR-100 ({others}), but edition "
            f"{edition!r} was asked for; expected {ARCHIVE_NAMES[edition]} or an extracted "
            f"{FOLDER_NAMES[edition]}/ folder in {folder}"
        )
    expected = ", ".join(
        f"{ARCHIVE_NAMES[ed]}, {FOLDER_NAMES[ed]}/ or {', '.join(DATA_FILES[ed])}" for ed in order
    )
    raise _error(f"no CIFAR-100 data in {folder}: expected {expected}")


# --------------------------------------------------------------------------- download


def _fetch(url: str, out: BinaryIO, progress: bool, label: str) -> tuple[str, int]:
    """Stream ``url`` into ``out``; returns (md5 hex digest, bytes received)."""
    request = urllib.request.Request(url, headers={"User-Agent": "cvtrain"})
    md5 = hashlib.md5(usedforsecurity=False)
    received = 0
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
        length = response.headers.get("Content-Length", "")
        total = int(length) if length.strip().isdigit() else None
        with byte_progress(progress, total, label, terminal_only=False) as advance:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                md5.update(chunk)
                received += len(chunk)
                advance(len(chunk))
    if total is not None and received != total:
        raise http.client.IncompleteRead(b"", total - received)
    return md5.hexdigest(), received


def _download(edition: str, cache: Path, progress: bool) -> Path:
    info = DOWNLOADS[edition]
    url, expected_md5 = info["url"], info["md5"].lower()
    target = cache / ARCHIVE_NAMES[edition]

    def failed(reason: str) -> DataError:
        return _error(
            f"no CIFAR-100 archive in {cache} and downloading {url} failed: {reason}; "
            "set data.path to a local copy"
        )

    part: Path | None = None
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{target.name}.", suffix=".part", dir=cache)
        part = Path(name)
        with os.fdopen(fd, "wb") as out:
            digest, size = _fetch(url, out, progress, f"downloading {target.name}")
        if digest != expected_md5:
            raise failed(
                f"MD5 checksum mismatch (expected {expected_md5}, got {digest} for {size:,} bytes)"
            )
        os.chmod(part, 0o644)
        os.replace(part, target)
        part = None
        return target
    except DataError:
        raise
    except urllib.error.HTTPError as exc:
        raise failed(f"HTTP {exc.code} {_one_line(str(exc.reason), 100)}") from exc
    except urllib.error.URLError as exc:
        raise failed(_one_line(str(exc.reason), 200)) from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise failed(_reason(exc)) from exc
    finally:
        if part is not None:
            with contextlib.suppress(OSError):
                part.unlink()


def _from_cache(edition: str, download: bool, progress: bool) -> Path:
    cache = cache_dir()
    order = EDITIONS if edition == "auto" else (edition,)
    for ed in order:
        archive = cache / ARCHIVE_NAMES[ed]
        if archive.is_file():
            return archive
    if not download:
        names = " or ".join(ARCHIVE_NAMES[ed] for ed in order)
        raise _error(
            f"no CIFAR-100 archive in {cache} (expected {names}) and downloading is off; "
            "set data.path to a local copy"
        )
    return _download(order[0], cache, progress)


# --------------------------------------------------------------------------- loading


def load_cifar100(
    path: str | Path | None,
    num_classes: int = 25,
    edition: str = "auto",
    *,
    download: bool = True,
    progress: bool = True,
) -> ImageData:
    """Load CIFAR-100, keeping fine labels ``0..num_classes-1`` in file order.

    ``path`` is an archive of either edition, an extracted ``cifar-100-binary/`` or
    ``cifar-100-python/`` folder, or a folder holding one of those; ``None`` means the
    archive in :func:`cache_dir`, downloaded (MD5-checked) if missing and ``download``.
    ``edition`` is ``"auto"`` (binary preferred), ``"binary"`` or ``"python"``.
    """
    _check_load_args(num_classes, edition)
    num_classes = int(num_classes)
    try:
        source, kind, edition = _locate(path, edition, download, progress)
    except OSError as exc:  # e.g. a folder we may not list
        raise _error(f"cannot look for CIFAR-100 in {path}: {_reason(exc)}") from exc
    if kind == "archive":
        found, files, digest = _read_archive(source, edition)
    else:
        found, files, digest = _read_folder(source, edition)
    return _build(files, found, num_classes, source, digest)


def _locate(
    path: str | Path | None, edition: str, download: bool, progress: bool
) -> tuple[Path, str, str]:
    """(source, "archive" | "folder", edition to read it as)."""
    if path is None:
        source, kind = _from_cache(edition, download, progress), "archive"
    else:
        given = Path(path).expanduser()
        if given.is_file():
            source, kind = given, "archive"
        elif given.is_dir():
            source, kind, found_edition = _resolve_folder(given, edition)
            if kind == "folder":
                edition = found_edition  # an archive's members decide, whatever its name
        elif given.exists():
            raise _error(f"{given} is neither a CIFAR-100 archive nor a folder")
        else:
            raise _error(
                f"{given} does not exist; expected a CIFAR-100 archive ({ARCHIVE_NAMES['binary']} "
                f"or {ARCHIVE_NAMES['python']}), an extracted folder, or a folder holding one"
            )
    return source.absolute(), kind, edition


# --------------------------------------------------------------------------- synthetic data

# Foreground colour families (RGB, 0..255). The first five make the 25 default classes.
_COLOURS = np.array(
    [
        (225, 40, 40),  # red
        (40, 205, 60),  # green
        (55, 80, 235),  # blue
        (235, 215, 40),  # yellow
        (215, 50, 205),  # magenta
        (40, 210, 215),  # cyan
        (245, 135, 30),  # orange
        (235, 235, 235),  # white
        (150, 95, 245),  # lavender
        (165, 240, 140),  # mint
    ],
    dtype=np.float32,
)
_PATTERNS = (
    "hstripes", "vstripes", "checker", "rings", "disc",
    "diagonal", "dots", "square", "plus", "cross",
)  # fmt: skip


def _class_style(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fine label -> (pattern index, colour index); all 100 combinations are distinct."""
    block, within = np.divmod(label, 25)
    pattern = within % 5 + 5 * (block % 2)
    colour = within // 5 + 5 * (block // 2)
    return pattern, colour


def _pattern_masks(pattern: int, p: dict[str, np.ndarray]) -> np.ndarray:
    """Foreground coverage in [0, 1], broadcastable to (n, 32, 32), for n images of a pattern."""
    grid = np.arange(IMAGE_SIZE, dtype=np.float32)
    y = grid[None, :, None]
    x = grid[None, None, :]
    cx = p["cx"][:, None, None]
    cy = p["cy"][:, None, None]
    period = p["period"][:, None, None]
    phase = p["phase"][:, None, None]
    size = p["size"][:, None, None]
    dx, dy = x - cx, y - cy
    two_pi = np.float32(2 * np.pi)

    def waves(u: np.ndarray) -> np.ndarray:
        return np.clip(0.5 + 2.0 * np.sin(two_pi * u / period + phase), 0.0, 1.0)

    def inside(signed: np.ndarray) -> np.ndarray:  # signed distance, > 0 inside
        return np.clip(0.5 + signed, 0.0, 1.0)

    name = _PATTERNS[pattern]  # results may broadcast over rows or columns
    if name == "hstripes":
        return waves(dy)
    if name == "vstripes":
        return waves(dx)
    if name == "checker":
        s = np.sin(two_pi * dx / period + phase) * np.sin(two_pi * dy / period)
        return np.clip(0.5 + 4.0 * s, 0.0, 1.0)
    if name == "rings":
        return waves(np.sqrt(dx * dx + dy * dy))
    if name == "disc":
        return inside(size - np.sqrt(dx * dx + dy * dy))
    if name == "diagonal":
        sign = np.where(p["flip"] > 0.5, 1.0, -1.0).astype(np.float32)[:, None, None]
        return waves((dx + sign * dy) * np.float32(np.sqrt(0.5)))
    if name == "dots":
        gx = np.mod(dx, period) - period / 2
        gy = np.mod(dy, period) - period / 2
        return inside(period * 0.3 - np.sqrt(gx * gx + gy * gy))
    if name == "square":
        return inside(size - np.maximum(np.abs(dx), np.abs(dy)))
    if name == "plus":
        return inside(size / 3.5 - np.minimum(np.abs(dx), np.abs(dy)))
    # cross: two diagonal bars
    half = np.float32(np.sqrt(0.5))
    return inside(size / 3.5 - np.minimum(np.abs(dx - dy), np.abs(dx + dy)) * half)


def _synthesize(labels: np.ndarray, rng: np.random.Generator, chunk: int = 512) -> np.ndarray:
    """Images (N, 32, 32, 3) uint8 for the given fine labels, vectorised in chunks."""
    n = len(labels)
    f32 = np.float32
    pattern, colour = _class_style(labels)
    # Per-image jitter, drawn for every image in a fixed order (deterministic per seed).
    params = {
        "cx": rng.uniform(11.5, 19.5, n).astype(f32),
        "cy": rng.uniform(11.5, 19.5, n).astype(f32),
        "period": rng.uniform(5.5, 9.0, n).astype(f32),
        "phase": rng.uniform(0.0, 2 * np.pi, n).astype(f32),
        "size": rng.uniform(7.0, 10.5, n).astype(f32),
        "flip": rng.uniform(0.0, 1.0, n).astype(f32),
    }
    fg = _COLOURS[colour] + rng.normal(0.0, 12.0, (n, 3)).astype(f32)
    bg = rng.uniform(0.0, 70.0, (n, 3)).astype(f32)
    brightness = rng.uniform(0.75, 1.15, n).astype(f32)
    tilt = rng.uniform(-0.2, 0.2, (n, 2)).astype(f32)  # illumination gradient
    grid = (np.arange(IMAGE_SIZE, dtype=f32) - 15.5) / IMAGE_SIZE

    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        m = sl.stop - sl.start
        mask = np.empty((m, IMAGE_SIZE, IMAGE_SIZE), dtype=f32)
        pat = pattern[sl]
        for k in np.unique(pat):
            idx = np.nonzero(pat == k)[0]
            sub = {key: val[sl][idx] for key, val in params.items()}
            mask[idx] = _pattern_masks(int(k), sub)
        lo, hi = bg[sl][:, None, None, :], fg[sl][:, None, None, :]
        img = lo + (hi - lo) * mask[..., None]
        light = (
            brightness[sl][:, None, None]
            * (1 + tilt[sl, 0][:, None, None] * grid[None, None, :])
            * (1 + tilt[sl, 1][:, None, None] * grid[None, :, None])
        )
        img *= light[..., None]
        img += f32(14.0) * rng.standard_normal(img.shape, dtype=f32)
        np.clip(np.rint(img, out=img), 0, 255, out=img)
        out[sl] = img.astype(np.uint8)
    return out


def _synthetic_split(
    classes: int, per_class: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    labels = rng.permutation(np.repeat(np.arange(classes, dtype=np.int64), per_class))
    return _synthesize(labels, rng), labels


def synthesize_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Learnable synthetic 32x32 RGB images (uint8 NHWC), one per label (0..99); the
    generator behind the synthetic archives, shared with other synthetic datasets."""
    return _synthesize(np.asarray(labels, dtype=np.int64), np.random.default_rng(seed))


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
    formats and the same archive bytes.
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
    _write_targz(target, folder, members)
    return target
