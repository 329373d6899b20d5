"""A synthetic birds dataset with real JPEG files: :func:`write_synthetic_cub200`, for
tests and for machines without the real data. Its images come from the generator shared
with the other synthetic datasets (:mod:`cvtrain.data.synthetic`), resized.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cvtrain.data.synthetic import MARKER, MARKER_TEXT, synthesize_images
from cvtrain.errors import UsageError


def write_synthetic_cub200(dest: str | Path, classes: int = 5, per_class: int = 8,
                           image_size: int = 64, layout: str = "2010", seed: int = 0) -> Path:
    """Write a small learnable birds dataset with real JPEG files; returns its root.

    2010: ``dest/images/<NNN.Synthetic_bird_K>/...jpg`` and ``dest/lists/{train,test,files,
    classes}.txt``; 2011: the same images under ``dest/CUB_200_2011/`` with its text files.
    Half of each class (rounded down, at least one) is listed for testing. A ``SYNTHETIC``
    file beside the lists (:data:`cvtrain.data.synthetic.MARKER`) tells the loader what it
    is.
    """
    from PIL import Image

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
    (root / MARKER).write_text(MARKER_TEXT)  # the loader knows it is synthetic
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
