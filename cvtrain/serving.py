"""A trained run put to use: its raw-image model (``classifier.keras``, see
:mod:`cvtrain.training.classifier`) found, checked against the run's manifest, loaded with
plain Keras and run on images (``cvtrain predict``), or exported (``cvtrain export``).

A run is a run folder, ``<job>/<run-id>`` under a results root, or an ``s3://`` URI: a
run in a bucket is fetched into ``<cache>/runs/<bucket>/<prefix>/<job>/<run-id>/`` (again
only what changed) and every file checked against its manifest, as ``cvtrain results
fetch`` does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvtrain import runs
from cvtrain.errors import DataError, StorageError
from cvtrain.images import Item, batches


@dataclass
class RunModel:
    """A run's classifier, loaded: what predictions need to know about it."""

    path: Path  # the local run folder
    label: str  # <job>/<run-id>
    root: str  # its results root (a folder or s3://...)
    model: Any
    classes: list[str]
    info: dict
    metrics: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int] | None:
        """(height, width) the model takes, or None when it resizes any size itself."""
        shape = self.info.get("input", {}).get("shape") or [None, None, None, 3]
        return None if shape[1] is None else (int(shape[1]), int(shape[2]))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StorageError(f"{path}: unreadable ({type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:120]})") from None


def locate(run: str, root: str | None = None, endpoint_url: str | None = None,
           progress: bool = False) -> tuple[Path, str, str]:
    """(local run folder, ``<job>/<run-id>``, results root) of ``run``; a run in a bucket
    is fetched into the cache and checked against its manifest first."""
    from cvtrain.results import fetch_run, resolve_run
    from cvtrain.storage.s3 import S3Uri, is_s3

    ref = resolve_run(run, root)
    if is_s3(ref.root):
        from cvtrain.paths import cache_dir

        uri = S3Uri.parse(ref.root)
        dest = cache_dir() / "runs" / uri.bucket / uri.key.strip("/")
        fetched = fetch_run(ref, dest, endpoint_url=endpoint_url, progress=progress)
        if fetched.problems:
            raise StorageError(f"{ref.location}: its copy in {fetched.path} does not match its "
                               f"manifest.json: {'; '.join(fetched.problems[:3])}")
        return fetched.path, ref.label, ref.root
    path = Path(ref.location)
    if not path.is_dir():
        raise StorageError(f"{ref.location}: no such run folder (cvtrain results ls "
                           f"{ref.root} lists the runs)")
    return path, ref.label, ref.root


def check(path: Path, root: str) -> dict:
    """The run's ``classifier.json``, once the run is complete and its classifier, its
    description and its classes match the manifest; else one line saying what to do."""
    from cvtrain.storage.s3 import is_s3

    if not (path / runs.MANIFEST).is_file():
        raise StorageError(f"{path}: incomplete run (no {runs.MANIFEST}); its classifier is "
                           "saved when it completes: rerun it with the same --run-id to "
                           "finish it")
    if not (path / runs.CLASSIFIER).is_file():
        where = f"--results {root}" if is_s3(root) else f"--out {root}"
        raise StorageError(f"{path}: no {runs.CLASSIFIER} (a run trained before cvtrain saved "
                           f"a model that takes raw images, or one whose {runs.LOG} says why "
                           "it was not saved); train it again to get one: "
                           f"cvtrain run {path / runs.SPEC} {where} --force")
    manifest = _read_json(path / runs.MANIFEST)
    listed = {f.get("path"): f for f in manifest.get("files", [])}
    for name in (runs.CLASSIFIER, runs.CLASSIFIER_INFO, runs.CLASSES):
        entry, file = listed.get(name), path / name
        if (entry is None or not file.is_file() or file.stat().st_size != entry.get("size")
                or runs.sha256_file(file) != entry.get("sha256")):
            raise StorageError(f"{file}: does not match the run's {runs.MANIFEST} (changed "
                               "or damaged since the run completed)")
    return _read_json(path / runs.CLASSIFIER_INFO)


def load(run: str, root: str | None = None, endpoint_url: str | None = None,
         backend: str = "auto", progress: bool = False) -> RunModel:
    """Find, check and load the classifier of ``run`` with Keras on ``backend``."""
    from cvtrain.training.backend import select_backend

    path, label, root = locate(run, root, endpoint_url, progress)
    info = check(path, root)
    name = select_backend(backend)
    import keras

    file = path / runs.CLASSIFIER
    try:
        model = keras.saving.load_model(file)
    except Exception as exc:  # Keras raises anything from ValueError to zipfile errors
        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"{file}: Keras {keras.__version__} on {name} cannot load it "
                        f"({type(exc).__name__}: {reason})") from None
    classes = _read_json(path / info.get("classes", runs.CLASSES))
    if not isinstance(classes, list) or len(classes) != model.output_shape[-1]:
        raise DataError(f"{path / runs.CLASSES}: expected {model.output_shape[-1]} class names "
                        "(one per output of the classifier)")
    metrics = _read_json(path / runs.METRICS) if (path / runs.METRICS).is_file() else {}
    return RunModel(path, label, root, model, [str(c) for c in classes], info, metrics)


@dataclass
class Prediction:
    item: Item
    top: list[tuple[int, float]]  # (class index, probability), most likely first


def predict(loaded: RunModel, items: list[Item], batch_size: int = 64, top_k: int = 3,
            resize: bool = False, on_batch: Callable[[int], None] | None = None,
            on_error: Callable[[Item], None] | None = None) -> list[Prediction]:
    """The top ``top_k`` classes of every readable item, in the order of ``items``;
    ``on_batch(n)`` after each n images, ``on_error(item)`` for each that cannot be read."""
    k = max(1, min(top_k, len(loaded.classes)))
    done: dict[int, Prediction] = {}
    for group, images in batches(items, batch_size, loaded.size, resize):
        if images is not None:
            probs = np.asarray(loaded.model.predict_on_batch(images), np.float64)
            order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
            for item, row, p in zip(group, order, probs, strict=True):
                done[id(item)] = Prediction(item, [(int(i), float(p[i])) for i in row])
        elif on_error is not None:
            on_error(group[0])
        if on_batch is not None:
            on_batch(len(group))
    return [done[id(item)] for item in items if id(item) in done]


def accuracy(loaded: RunModel, predictions: list[Prediction]) -> dict | None:
    """Top-1 accuracy over the predictions whose true class is known, or None."""
    labelled = [p for p in predictions if p.item.label is not None]
    if not labelled:
        return None
    right = sum(loaded.classes[p.top[0][0]] == p.item.label for p in labelled)
    return {"images": len(labelled), "correct": right, "accuracy": right / len(labelled),
            "run_test_accuracy": loaded.metrics.get("test_accuracy")}
