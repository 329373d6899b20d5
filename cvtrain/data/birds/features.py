"""Frozen-backbone features, computed once and cached on disk.

One pass of ResNet50 without its top (``pooling=None``) gives the spatial maps
(7x7x2048 at 224 px); the pooled 2048-vectors are their spatial means, which is exactly
what ``pooling="avg"`` computes. So one pass serves every head. Features are stored under
``<cache>/features/<key>/`` where the key hashes what determines them: the dataset's
content, the weights, the image size and the backbone. Any later job with the same key
reuses them without touching the backbone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
EXTRACT_BATCH = 32


@dataclass
class FeatureSet:
    """One kind of features ("pooled": (N, 2048) float32; "maps": (N, h, w, 2048) float16)."""

    train: np.ndarray
    test: np.ndarray
    key: str
    path: Path
    cache_hit: bool
    seconds: float  # extraction time (0 on a cache hit)
    #: where shared features came from, or where these were shared (see .shared); None: not
    shared: str | None = None


def feature_key(dataset_sha256: str, layout: str, weights_id: str, image_size: int,
                backbone: str) -> str:
    blob = json.dumps({"v": FORMAT_VERSION, "dataset": dataset_sha256, "layout": layout,
                       "weights": weights_id, "image_size": image_size, "backbone": backbone},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def features_dir() -> Path:
    from cvtrain.paths import cache_dir

    return cache_dir() / "features"


def _load(path: Path, key: str, kind: str) -> FeatureSet | None:
    """The cached features of one kind; only those are read (maps are the large ones)."""
    if not (path / "meta.json").is_file():
        return None
    try:
        train, test = (np.load(path / f"{split}_{kind}.npy") for split in ("train", "test"))
    except (OSError, ValueError):
        return None  # a damaged cache entry is recomputed, not trusted
    return FeatureSet(train, test, key=key, path=path, cache_hit=True, seconds=0.0)


def extract(backbone, files: list[str], image_size: int) -> np.ndarray:
    """Backbone maps of ``files`` in order (float32), naming any undecodable file."""
    from cvtrain.data.birds import image_errors, image_stream

    with image_errors(files):
        return backbone.predict(image_stream(files, None, image_size, EXTRACT_BATCH), verbose=0)


def load_or_extract(birds, opts, image_size: int, layout: str, seed: int, log=None) -> FeatureSet:
    """The cached features of ``birds`` (the kind ``opts.features`` names) for the backbone
    ``opts`` names; on a miss both kinds are computed and cached, one kind returned.

    While features are shared (:func:`cvtrain.data.birds.shared.sharing`, on AWS Batch), a
    local miss is looked up in the results root first, and features extracted here are
    published there."""
    from cvtrain.data.birds import shared as sharing
    from cvtrain.models.weights import weights_identity

    key = feature_key(birds.sha256, layout, weights_identity(opts.weights, seed), image_size,
                      opts.backbone)
    path = features_dir() / key
    cached = _load(path, key, opts.features)
    if cached is not None:
        if log:
            log.print(f"[bold]features[/]: cache hit {path}")
        return cached
    shared = sharing.current()
    if shared is not None and (where := sharing.fetch(key, path, shared, log)):
        fetched = _load(path, key, opts.features)
        if fetched is not None:
            fetched.shared = where
            return fetched

    from cvtrain.models.resnet import build_backbone

    if log:
        log.print(f"[bold]features[/]: extracting with {opts.backbone} "
                  f"({len(birds.train_files)} train + {len(birds.test_files)} test images)")
    t0 = time.perf_counter()
    backbone = build_backbone(opts, image_size, pooling=None)
    maps = {"train": extract(backbone, birds.train_files, image_size),
            "test": extract(backbone, birds.test_files, image_size)}
    seconds = time.perf_counter() - t0
    arrays = {}
    for split, m in maps.items():
        arrays[f"{split}_pooled"] = m.astype(np.float32).mean(axis=(1, 2))
        arrays[f"{split}_maps"] = m.astype(np.float16)  # half the disk; ample precision
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=key + ".", dir=path.parent))
    try:
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        (tmp / "meta.json").write_text(json.dumps({
            "key": key, "dataset_sha256": birds.sha256, "layout": layout,
            "image_size": image_size, "backbone": opts.backbone, "weights": opts.weights,
            "extraction_seconds": round(seconds, 3), "train": len(birds.train_files),
            "test": len(birds.test_files)}, indent=2))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)  # a reader sees the whole entry or none
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    where = sharing.publish(path, key, shared, log) if shared is not None else None
    return FeatureSet(arrays[f"train_{opts.features}"], arrays[f"test_{opts.features}"], key=key,
                      path=path, cache_hit=False, seconds=seconds, shared=where)


def feature_layers(opts, image_size: int, seed: int) -> list:
    """The frozen backbone that computed a run's features (float32), with the spatial mean
    for pooled ones, as layers for its raw-image model. Random weights (``none``) are
    those extraction drew: the run's seed set, then the backbone built first."""
    import keras

    from cvtrain.models.resnet import build_backbone

    if opts.weights.lower() == "none":
        keras.utils.set_random_seed(seed)
    backbone = build_backbone(opts, image_size, pooling=None)
    backbone.trainable = False
    if opts.features == "pooled":
        return [backbone, keras.layers.GlobalAveragePooling2D(name="pool", dtype="float32")]
    return [backbone]
