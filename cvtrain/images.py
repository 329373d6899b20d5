"""Images to predict on, as ``cvtrain predict`` takes them: image files (PNG, JPEG and
whatever else Pillow reads), folders of them (searched recursively, in sorted order), and
CIFAR-100 archives or extracted folders (their test split, with the true labels).

Each image becomes an :class:`Item`: a name, uint8 RGB pixels decoded only when its batch
is due, and its true class name when the source knows it. An unreadable image is an
item with an error, never an exception: the others go on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvtrain.errors import UsageError

#: what a folder is searched for (lower case)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
#: file names read as a CIFAR-100 archive, not as an image
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


@dataclass
class Item:
    """One image: where it came from, its pixels (or how to read them), its true class."""

    name: str
    path: Path | None = None  # decoded when its batch is due
    pixels: np.ndarray | None = None  # already in memory (a CIFAR split)
    label: str | None = None
    error: str | None = None


def _is_cifar_folder(folder: Path) -> bool:
    from cvtrain.data.cifar.format import ARCHIVE_NAMES, DATA_FILES, FOLDER_NAMES

    for edition, files in DATA_FILES.items():
        if (all((folder / f).is_file() for f in files) or (folder / FOLDER_NAMES[edition]).is_dir()
                or (folder / ARCHIVE_NAMES[edition]).is_file()):
            return True
    return False


def _cifar_items(path: Path, classes: list[str], progress: bool) -> list[Item]:
    """The test split of a CIFAR-100 archive or folder: the images of the model's classes
    (all of them when it knows none), named ``<archive>:test/<index>``, labelled."""
    from cvtrain.data.cifar import load_cifar100

    data = load_cifar100(path, num_classes=100, progress=progress)
    names = [data.class_names[int(y)] for y in data.y_test]
    known = set(classes)
    keep = [i for i, n in enumerate(names) if n in known] or list(range(len(names)))
    return [Item(f"{path.name}:test/{i}", pixels=data.x_test[i], label=names[i]) for i in keep]


def collect(args: list[str], classes: list[str], progress: bool = False) -> list[Item]:
    """The images named by ``args``, in order; a missing path or an empty folder is an item
    with an error (said once, as for an unreadable image)."""
    items: list[Item] = []
    for arg in args:
        path = Path(arg).expanduser()
        if path.is_dir():
            if _is_cifar_folder(path):
                items += _cifar_items(path, classes, progress)
                continue
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                items.append(Item(arg, error="no images in this folder (expected "
                                             f"{', '.join(IMAGE_SUFFIXES)} files)"))
            items += [Item(str(p), path=p) for p in found]
        elif path.is_file():
            if path.name.lower().endswith(ARCHIVE_SUFFIXES):
                items += _cifar_items(path, classes, progress)
            else:
                items.append(Item(arg, path=path))
        else:
            items.append(Item(arg, error="no such file or folder"))
    if not items:
        raise UsageError("expected at least one IMAGE: an image file, a folder of them or a "
                         "CIFAR-100 archive")
    return items


def decode(item: Item, size: tuple[int, int] | None, resize: bool) -> np.ndarray | None:
    """``item``'s uint8 (height, width, 3) RGB pixels; None with ``item.error`` set when it
    cannot be read or has not the ``size`` the model takes (resized to it with
    ``resize``: bilinear, Pillow's)."""
    if item.error is not None:
        return None
    if item.pixels is not None:
        pixels = item.pixels
    else:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(item.path) as image:
                image = image.convert("RGB")  # grey, palette, RGBA, CMYK: as RGB
                if size is not None and resize and image.size != (size[1], size[0]):
                    image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.uint8)
        except UnidentifiedImageError:
            item.error = "not a readable image (Pillow knows no format for it)"
            return None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            reason = " ".join(str(exc).split())[:160] or type(exc).__name__
            item.error = f"not a readable image ({reason})"
            return None
    if size is not None and pixels.shape[:2] != tuple(size):
        item.error = (f"is {pixels.shape[1]}x{pixels.shape[0]}; the model takes "
                      f"{size[1]}x{size[0]} images (--resize resizes it)")
        return None
    return pixels


def batches(items: list[Item], batch_size: int, size: tuple[int, int] | None,
            resize: bool) -> Iterator[tuple[list[Item], np.ndarray | None]]:
    """(items, images) of up to ``batch_size`` images of one shape each, in order; an item
    that cannot be read comes alone with None (its ``error`` says why)."""
    pending: list[tuple[Item, np.ndarray]] = []

    def flush():
        while pending:
            shape = pending[0][1].shape
            same = [(i, p) for i, p in pending if p.shape == shape]
            pending[:] = [(i, p) for i, p in pending if p.shape != shape]
            yield [i for i, _ in same], np.stack([p for _, p in same])

    for item in items:
        pixels = decode(item, size, resize)
        if pixels is None:
            yield from flush()
            yield [item], None
            continue
        pending.append((item, pixels))
        if len(pending) == batch_size:
            yield from flush()
    yield from flush()
