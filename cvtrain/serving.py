"""A trained run put to use: its raw-image model (``classifier.keras``, see
:mod:`cvtrain.training.raw_image_model`) found, checked against the run's manifest, loaded with
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

from cvtrain import manifest, runs
from cvtrain.errors import DataError, StorageError
from cvtrain.images import Item, batches
from cvtrain.runs import RunFolder


@dataclass
class Classifier:
    """A run's classifier, loaded: what predictions need to know about it."""

    run: RunFolder  # the local run folder (a run in a bucket: its checked copy)
    source: RunFolder  # where the run was found (a results root's folder or a bucket's)
    model: Any
    classes: list[str]
    info: dict
    metrics: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def label(self) -> str:
        return self.run.label

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
           progress: bool = False) -> tuple[RunFolder, RunFolder]:
    """(the run folder ``run`` names, its local folder): a run in a bucket is fetched into
    the cache and checked against its manifest first."""
    from cvtrain.results import fetch_run, resolve_run
    from cvtrain.storage.s3 import S3Uri

    found = resolve_run(run, root)
    if found.is_remote:
        from cvtrain.paths import cache_dir

        uri = S3Uri.parse(found.root)
        local, _ = fetch_run(found, cache_dir() / "runs" / uri.bucket / uri.key.strip("/"),
                             endpoint_url=endpoint_url, progress=progress)
        return found, local
    if not found.path.is_dir():
        raise StorageError(f"{found.location}: no such run folder (cvtrain results ls "
                           f"{found.root} lists the runs)")
    return found, found


def check(local: RunFolder, found: RunFolder) -> dict:
    """The run's ``classifier.json``, once the run is complete and its classifier, its
    description and its classes match the manifest; else one line saying what to do.
    ``found``: where the run was found, for the command that trains it again."""
    path = local.path
    if not local.is_complete():
        raise StorageError(f"{path}: incomplete run (no {runs.MANIFEST}); its classifier is "
                           "saved when it completes: rerun it with the same --run-id to "
                           "finish it")
    if not local.file(runs.CLASSIFIER).is_file():
        where = f"--results {found.root}" if found.is_remote else f"--out {found.root}"
        raise StorageError(f"{path}: no {runs.CLASSIFIER} (a run trained before cvtrain saved "
                           f"a model that takes raw images, or one whose {runs.LOG} says why "
                           "it was not saved); train it again to get one: "
                           f"cvtrain run {path / runs.SPEC} {where} --force")
    listed = manifest.listed(_read_json(local.file(runs.MANIFEST)))
    for name in (runs.CLASSIFIER, runs.CLASSIFIER_INFO, runs.CLASSES):
        if name not in listed or manifest.problems(path, {"files": [listed[name]]}):
            raise StorageError(f"{path / name}: does not match the run's {runs.MANIFEST} "
                               "(changed or damaged since the run completed)")
    return _read_json(local.file(runs.CLASSIFIER_INFO))


def load(run: str, root: str | None = None, endpoint_url: str | None = None,
         backend: str = "auto", progress: bool = False) -> Classifier:
    """Find, check and load the classifier of ``run`` with Keras on ``backend``."""
    from cvtrain.training.backend import select_backend

    found, local = locate(run, root, endpoint_url, progress)
    info = check(local, found)
    path = local.path
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
    return Classifier(local, found, model, [str(c) for c in classes], info, metrics)


@dataclass
class Prediction:
    item: Item
    top: list[tuple[int, float]]  # (class index, probability), most likely first


def predict(loaded: Classifier, items: list[Item], batch_size: int = 64, top_k: int = 3,
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


def accuracy(loaded: Classifier, predictions: list[Prediction]) -> dict | None:
    """Top-1 accuracy over the predictions whose true class is known, or None."""
    labelled = [p for p in predictions if p.item.label is not None]
    if not labelled:
        return None
    right = sum(loaded.classes[p.top[0][0]] == p.item.label for p in labelled)
    return {"images": len(labelled), "correct": right, "accuracy": right / len(labelled),
            "run_test_accuracy": loaded.metrics.get("test_accuracy")}
