"""Caltech-UCSD Birds: the 2010 and 2011 layouts, a streaming image pipeline, synthetic data.

2010 (CUB-200): ``images/<class folder>/<file>.jpg`` with ``lists/train.txt`` and
``lists/test.txt``, one path relative to ``images/`` a line.
2011 (CUB-200-2011): ``images.txt`` (id, path), ``train_test_split.txt`` (id, 1 = train)
and ``image_class_labels.txt`` (id, class id) beside ``images/``.

Either comes as a folder or a ``.tgz`` (extracted once into the cache). In both, an
image's class is its folder's name and class ids are the sorted folder names, so the
same images give the same labels whatever the layout.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvtrain.errors import DataError, UsageError
from cvtrain.runs import sha256_file

# ResNet50's preprocess_input ("caffe" mode): RGB -> BGR, minus the ImageNet BGR means
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
_SPLIT_SEED = 0  # the validation hold-out is the same for every run of every birds job


@dataclass
class BirdsData:
    """The file lists of a birds dataset (images stay on disk)."""

    root: Path
    train_files: list[str]
    train_labels: np.ndarray
    test_files: list[str]
    test_labels: np.ndarray
    class_names: list[str]
    source: Path
    sha256: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


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
    from cvtrain.data.cifar import cache_dir

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
    if path is None:
        raise DataError("data.path: the birds dataset is not downloaded automatically; set "
                        "data.path to its folder or .tgz")
    source = Path(path).expanduser()
    if not source.exists():
        raise DataError(f"{source}: no such file or folder (expected the birds dataset: "
                        f"{_expected(layout)}, or a .tgz of them)")
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
                     sha256=sha or digest.hexdigest())


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
        raise DataError(f"validation split {fraction} of {n} training images leaves an empty side")
    perm = np.random.default_rng(_SPLIT_SEED).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# ------------------------------------------------------------------------------ pipeline


def load_image(tf, path, image_size: int):
    """Decode (JPEG, PNG, ...; grey becomes RGB), resize, ResNet50 preprocessing."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size])
    image.set_shape([image_size, image_size, 3])
    return image[..., ::-1] - tf.constant(IMAGENET_BGR_MEAN, tf.float32)


def image_stream(files: list[str], labels: np.ndarray | None, image_size: int,
                 batch_size: int, num_classes: int = 0):
    """Ordered batches of preprocessed images (and one-hot labels when given)."""
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    ds = tf.data.Dataset.from_tensor_slices(files)
    ds = ds.map(lambda p: load_image(tf, p, image_size), num_parallel_calls=autotune)
    if labels is not None:
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.from_tensor_slices(
            tf.one_hot(labels, num_classes)))
    return ds.batch(batch_size).prefetch(autotune)


def training_image_stream(files: list[str], labels: np.ndarray, num_classes: int,
                          image_size: int, batch_size: int, epochs: int, seed: int,
                          initial_epoch: int = 0):
    """All epochs' training batches, each epoch in its own seeded order, decoded from disk
    as they are needed (the dataset never has to fit in memory)."""
    import tensorflow as tf

    autotune = tf.data.AUTOTUNE
    paths = tf.constant(files)
    onehot = tf.one_hot(tf.constant(labels), num_classes)
    base_seed = tf.constant([seed, 1], tf.int64)

    def epoch_order(epoch):
        epoch_seed = tf.random.experimental.stateless_fold_in(base_seed, epoch)
        return tf.data.Dataset.from_tensor_slices(
            tf.random.experimental.stateless_shuffle(tf.range(len(files)), epoch_seed))

    return (tf.data.Dataset.range(initial_epoch, epochs).flat_map(epoch_order)
            .map(lambda i: (load_image(tf, paths[i], image_size), onehot[i]),
                 num_parallel_calls=autotune, deterministic=True)
            .batch(batch_size).prefetch(autotune))


def find_unreadable(files: list[str]) -> str | None:
    """The first file TensorFlow cannot decode (used to name the culprit of a failed batch)."""
    import tensorflow as tf

    for file in files:
        try:
            tf.io.decode_image(tf.io.read_file(file), channels=3, expand_animations=False)
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
            return file
    return None


@contextlib.contextmanager
def image_errors(files: list[str]):
    """Turn TensorFlow's anonymous decode failures into a DataError naming the file."""
    import tensorflow as tf

    try:
        yield
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError):
        bad = find_unreadable(files)
        if bad is None:
            raise
        raise DataError(f"{bad}: not a readable image (corrupt or not JPEG/PNG)") from None


# ------------------------------------------------------------------------------ synthetic


def write_synthetic_cub200(dest: str | Path, classes: int = 5, per_class: int = 8,
                           image_size: int = 64, layout: str = "2010", seed: int = 0) -> Path:
    """Write a small learnable birds dataset with real JPEG files; returns its root.

    2010: ``dest/images/<NNN.Synthetic_bird_K>/...jpg`` and ``dest/lists/{train,test,files,
    classes}.txt``; 2011: the same images under ``dest/CUB_200_2011/`` with its text files.
    Half of each class (rounded down, at least one) is listed for testing.
    """
    from PIL import Image

    from cvtrain.data.cifar import synthesize_images

    if not 1 <= classes <= 100:
        raise UsageError(f"classes must be in 1..100, got {classes}")
    if per_class < 2:
        raise UsageError(f"per_class must be >= 2 (one training, one test image), got {per_class}")
    if layout not in ("2010", "2011"):
        raise UsageError(f"layout must be 2010 or 2011, got {layout!r}")
    dest = Path(dest).expanduser()
    root = dest if layout == "2010" else dest / "CUB_200_2011"
    labels = np.repeat(np.arange(classes), per_class)
    pixels = synthesize_images(labels, seed)
    rels, train_flags = [], []
    for k in range(classes):
        folder = f"{k + 1:03d}.Synthetic_bird_{k + 1}"
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        n_test = max(1, per_class // 2)
        for j in range(per_class):
            rel = f"{folder}/Synthetic_bird_{k + 1}_{j + 1:04d}.jpg"
            image = Image.fromarray(pixels[k * per_class + j]).resize(
                (image_size, image_size), Image.Resampling.BILINEAR)
            image.save(root / "images" / rel, format="JPEG", quality=90)
            rels.append(rel)
            train_flags.append(j >= n_test)
    class_names = sorted({r.split("/")[0] for r in rels})
    if layout == "2010":
        lists = root / "lists"
        lists.mkdir(parents=True, exist_ok=True)
        (lists / "train.txt").write_text("".join(r + "\n" for r, t in zip(rels, train_flags,
                                                                           strict=True) if t))
        (lists / "test.txt").write_text("".join(r + "\n" for r, t in zip(rels, train_flags,
                                                                          strict=True) if not t))
        (lists / "files.txt").write_text("".join(r + "\n" for r in rels))
        (lists / "classes.txt").write_text("".join(c + "\n" for c in class_names))
    else:
        ids = range(1, len(rels) + 1)
        (root / "images.txt").write_text("".join(f"{i} {r}\n" for i, r in zip(ids, rels,
                                                                               strict=True)))
        (root / "train_test_split.txt").write_text(
            "".join(f"{i} {int(t)}\n" for i, t in zip(ids, train_flags, strict=True)))
        (root / "image_class_labels.txt").write_text(
            "".join(f"{i} {class_names.index(r.split('/')[0]) + 1}\n"
                    for i, r in zip(ids, rels, strict=True)))
        (root / "classes.txt").write_text(
            "".join(f"{i} {c}\n" for i, c in enumerate(class_names, start=1)))
    return root
