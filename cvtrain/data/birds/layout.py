"""Caltech-UCSD Birds on disk: the 2010 and 2011 layouts, read into :class:`BirdsData`.

2010 (CUB-200): ``images/<class folder>/<file>.jpg`` with ``lists/train.txt`` and
``lists/test.txt``, one path relative to ``images/`` a line.
2011 (CUB-200-2011): ``images.txt`` (id, path), ``train_test_split.txt`` (id, 1 = train)
and ``image_class_labels.txt`` (id, class id) beside ``images/``.

Either comes as a folder or a ``.tgz`` (extracted once into the cache). In both, an
image's class is its folder's name and class ids are the sorted folder names, so the
same images give the same labels whatever the layout. Only file lists are read here;
images stay on disk until :mod:`cvtrain.data.birds.images` decodes them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvtrain.data.registry import LoadedData
from cvtrain.data.synthetic import marked
from cvtrain.errors import DataError, UsageError, typed_set
from cvtrain.manifest import sha256_file
from cvtrain.paths import cache_dir

_SPLIT_SEED = 0  # the validation hold-out is the same for every run of every birds job


@dataclass
class BirdsData(LoadedData):
    """The file lists of a birds dataset (images stay on disk)."""

    root: Path
    train_files: list[str]
    train_labels: np.ndarray
    test_files: list[str]
    test_labels: np.ndarray


# ------------------------------------------------------------------------------ locating


def _is_root(folder: Path, layout: str) -> bool:
    if layout == "2010":
        return (folder / "lists" / "train.txt").is_file() and (folder / "images").is_dir()
    return (folder / "images.txt").is_file() and (folder / "train_test_split.txt").is_file()


def _find_root(folder: Path, layout: str) -> Path | None:
    """The folder itself or a descendant (up to three levels) holding the layout."""
    frontier = [folder]
    for _ in range(4):
        for candidate in frontier:
            if _is_root(candidate, layout):
                return candidate
        frontier = [c for f in frontier for c in sorted(f.iterdir())
                    if c.is_dir() and c.name != "images"]
    return None


def _expected(layout: str) -> str:
    return ("images/ and lists/train.txt, lists/test.txt" if layout == "2010" else
            "images/, images.txt, train_test_split.txt, image_class_labels.txt")


def _extract_tgz(archive: Path, sha256: str) -> Path:
    """Extract once into the cache (``<cache>/extracted/cub200-<sha>``) and reuse."""
    target = cache_dir() / "extracted" / f"cub200-{sha256[:16]}"
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(tmp, filter="data")  # refuses links out, absolute paths, devices
        (tmp / ".complete").write_text(sha256)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive}: cannot extract ({exc})") from None
    return target


# ------------------------------------------------------------------------------ parsing


def _read_lines(path: Path) -> list[str]:
    try:
        return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None


def _class_of(rel: str, where: str) -> str:
    parts = rel.split("/")
    if len(parts) < 2 or not parts[0] or ".." in parts:
        raise DataError(f"{where}: {rel!r} is not <class folder>/<file>")
    return parts[0]


def _lists_2010(root: Path) -> tuple[list[str], list[str]]:
    return (_read_lines(root / "lists" / "train.txt"), _read_lines(root / "lists" / "test.txt"))


def _lists_2011(root: Path) -> tuple[list[str], list[str]]:
    def table(name: str) -> dict[str, str]:
        rows = {}
        for line in _read_lines(root / name):
            fields = line.split(maxsplit=1)
            if len(fields) != 2:
                raise DataError(f"{root / name}: expected '<id> <value>' lines, got {line!r}")
            rows[fields[0]] = fields[1]
        return rows

    paths, split = table("images.txt"), table("train_test_split.txt")
    labels = table("image_class_labels.txt") if (root / "image_class_labels.txt").is_file() else {}
    train, test, folder_label = [], [], {}
    for image_id, rel in paths.items():
        if image_id not in split:
            raise DataError(f"{root / 'train_test_split.txt'}: no entry for image id {image_id}")
        folder = _class_of(rel, str(root / "images.txt"))
        if image_id in labels and folder_label.setdefault(folder, labels[image_id]) != \
                labels[image_id]:
            raise DataError(f"{root / 'image_class_labels.txt'}: folder {folder} has more than "
                            "one class id")
        (train if split[image_id].strip() == "1" else test).append(rel)
    return train, test


def load_cub200(path: str | Path | None, layout: str = "2010") -> BirdsData:
    """Read a birds dataset's file lists; every listed image must exist."""
    if layout not in ("2010", "2011"):
        raise UsageError(f"data.layout: expected 2010 or 2011, got {layout!r}")
    fix = (f"give its folder or .tgz with {typed_set('data.path=FOLDER', 'cub200')}, or try "
           f"synthetic birds: `cvtrain data synth cub200 DEST`, then "
           f"{typed_set('data.path=DEST', 'cub200')}")
    if path is None:
        raise DataError(f"data.path: the birds dataset is not downloaded automatically; {fix}")
    source = Path(path).expanduser()
    if not source.exists():
        raise DataError(f"{source}: no such file or folder (expected the birds dataset: "
                        f"{_expected(layout)}, or a .tgz of them); {fix}")
    if source.is_file():
        sha = sha256_file(source)
        folder = _extract_tgz(source, sha)
    else:
        sha, folder = None, source
    root = _find_root(folder, layout)
    if root is None:
        raise DataError(f"{source}: not a CUB-200 {layout} layout (expected {_expected(layout)})")
    train, test = _lists_2010(root) if layout == "2010" else _lists_2011(root)
    if not train or not test:
        raise DataError(f"{source}: the {layout} lists name no training or no test image")
    where = "lists/train.txt" if layout == "2010" else "images.txt"
    classes = sorted({_class_of(rel, where) for rel in train + test})
    index = {name: i for i, name in enumerate(classes)}
    images = root / "images"
    digest = hashlib.sha256()
    for rel in sorted(set(train + test)):
        file = images / rel
        try:
            if sha is None:  # a folder: its content key needs every byte anyway
                content = file.read_bytes()
                digest.update(f"{hashlib.sha256(content).hexdigest()}  {rel}\n".encode())
            else:  # an archive, hashed already: the markers are enough
                with open(file, "rb") as fh:
                    head = fh.read(8)
                    fh.seek(max(0, os.fstat(fh.fileno()).st_size - 4096))
                    content = head + fh.read()
        except FileNotFoundError:
            raise DataError(f"{file}: listed in the {layout} lists but missing") from None
        except OSError as exc:
            raise DataError(f"{file}: cannot read ({exc.strerror})") from None
        check_image_bytes(content, file)

    def labels(rels):
        return np.array([index[_class_of(r, where)] for r in rels], dtype=np.int64)

    return BirdsData(root=root, train_files=[str(images / r) for r in train],
                     train_labels=labels(train), test_files=[str(images / r) for r in test],
                     test_labels=labels(test), class_names=classes, source=source,
                     sha256=sha or digest.hexdigest(), synthetic=marked(root))


def check_image_bytes(content: bytes, path: Path) -> None:
    """Cheap structural check (JPEG start and end markers, PNG signature and end chunk), so
    a truncated or foreign file is named before TensorFlow meets it. ``content`` may be the
    file's first 8 bytes followed by its last 4 KiB."""
    if content[:3] == b"\xff\xd8\xff":
        if b"\xff\xd9" in content[-4096:]:
            return
        raise DataError(f"{path}: not a readable image (truncated JPEG: no end marker)")
    if content[:8] == b"\x89PNG\r\n\x1a\n":
        if b"IEND" in content[-64:]:
            return
        raise DataError(f"{path}: not a readable image (truncated PNG)")
    raise DataError(f"{path}: not a readable image (neither JPEG nor PNG)")


def split_indices(n: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: a fixed random hold-out (the lists are sorted by class,
    so the last rows would be a few classes only); the same for every run."""
    n_val = int(round(n * fraction))
    if n_val < 1 or n_val >= n:
        raise DataError(f"data.validation_split: {fraction} of {n} training images leaves an "
                        "empty side; expected a fraction that keeps both")
    perm = np.random.default_rng(_SPLIT_SEED).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
