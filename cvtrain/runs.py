"""The run folder: ``<out>/<job-name>/<run-id>/`` and the files every run leaves in it.

The contract storage, the docker runner and the cloud runner build on:

- ``spec.yaml``      the fully resolved job spec
- ``metrics.json``   test accuracy/loss, best epoch, epochs run, timings, versions, device
- ``history.csv``    one row per epoch (:data:`HISTORY_COLUMNS`), read by :func:`parse_history`
- ``curves.png``     loss and accuracy, training vs validation
- ``model.keras``    the trained network (what the dataset's streams fed it)
- ``classifier.keras`` the same model taking raw uint8 RGB images, preprocessing inside;
                     ``classifier.json`` says what input it takes and names ``classes.json``
- ``tensorboard/``   TensorBoard event files
- ``log.txt``        what the run printed
- ``classes.json``   class names in label order
- ``manifest.json``  written last: every other file with its size and sha256
- ``checkpoint/``    while the run is unfinished: the last checkpoint, of an epoch's end or
                     of a step within one (not in the manifest; deleted once every copy of
                     the run is complete)

A folder without ``manifest.json`` is an incomplete run.

:class:`RunFolder` names a run folder wherever it is (a local folder or a bucket), and
:class:`RunResult` says what became of a run; every part of cvtrain speaks of runs in these
two types. :func:`run_location` is the one place ``<root>/<job>/<run-id>`` is spelled.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cvtrain import manifest
from cvtrain.errors import UsageError

MANIFEST = "manifest.json"
METRICS = "metrics.json"
SPEC = "spec.yaml"
HISTORY = "history.csv"
CURVES = "curves.png"
MODEL = "model.keras"
LOG = "log.txt"
TENSORBOARD = "tensorboard"
CLASSES = "classes.json"
CLASSIFIER = "classifier.keras"
CLASSIFIER_INFO = "classifier.json"
CHECKPOINT = "checkpoint"
#: folders a checkpoint is written into and moved out of (never copied anywhere)
CHECKPOINT_TRANSIENT = (CHECKPOINT + ".tmp", CHECKPOINT + ".old")


def is_result(rel: str) -> bool:
    """Whether ``rel`` (a path relative to the run folder, "/"-separated) is part of the
    finished run that the manifest lists: not the checkpoint, not a file being written."""
    top = rel.split("/", 1)[0]
    return (top != CHECKPOINT and top not in CHECKPOINT_TRANSIENT and rel != MANIFEST
            and not rel.endswith(".tmp"))


def is_transient(rel: str) -> bool:
    """Whether ``rel`` is half-written: a checkpoint being replaced or a temporary file.
    Such paths are never uploaded."""
    return rel.split("/", 1)[0] in CHECKPOINT_TRANSIENT or rel.endswith(".tmp")

HISTORY_COLUMNS = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds",
                   "learning_rate"]


def check_part(part: str, what: str) -> str:
    """A job name or run id as one plain path component (no '/', not '.' or '..')."""
    if not part or "/" in part or "\\" in part or part in (".", ".."):
        raise UsageError(f"{what} {part!r}: expected a plain name without '/'")
    return part


def run_location(root: str | os.PathLike, job: str, run_id: str) -> str:
    """``<root>/<job>/<run-id>``: where a run lives under a results root, a local folder or
    ``s3://bucket/prefix``. The one place that layout is spelled out."""
    check_part(job, "job")
    check_part(run_id, "--run-id")
    root = os.fspath(root)
    if "://" in root:
        return f"{root.rstrip('/')}/{job}/{run_id}"
    return os.path.join(root, job, run_id)


def new_run_id() -> str:
    """Sortable and unique enough: UTC time to the second plus 4 random hex digits."""
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


@dataclass(frozen=True)
class RunFolder:
    """One run's folder, ``<root>/<job>/<run-id>``, wherever it is: ``root`` is a results
    root, a local folder or ``s3://bucket/prefix``. The methods that make and seal a folder
    (:meth:`prepare`, :meth:`finalize`, ...) are for a local one; a remote one is read
    through :mod:`cvtrain.results` and written by :class:`cvtrain.storage.RunUploader`."""

    root: str
    job: str
    run_id: str

    def __post_init__(self):
        object.__setattr__(self, "root", os.fspath(self.root))
        check_part(self.job, "job")
        check_part(self.run_id, "--run-id")

    @classmethod
    def new(cls, root: str | os.PathLike, job: str, run_id: str | None = None) -> RunFolder:
        """The folder of a run of ``job`` under ``root`` (a new id when none is given).
        Nothing is written yet: :meth:`prepare` makes it once the run is ready to start."""
        return cls(os.fspath(root), job, run_id or new_run_id())

    @classmethod
    def at(cls, path: str | os.PathLike) -> RunFolder:
        """The run folder at a local ``path`` (``<root>/<job>/<run-id>``)."""
        path = Path(path)
        return cls(str(path.parent.parent), path.parent.name, path.name)

    @property
    def location(self) -> str:
        return run_location(self.root, self.job, self.run_id)

    @property
    def label(self) -> str:
        return f"{self.job}/{self.run_id}"

    @property
    def is_remote(self) -> bool:
        return "://" in self.root

    @property
    def path(self) -> Path:
        """The local folder (a remote run has none here: fetch it first)."""
        if self.is_remote:
            raise UsageError(f"{self.location}: not a local folder")
        return Path(self.location)

    def file(self, name: str) -> Path:
        return self.path / name

    def join(self, name: str) -> str:
        """Where ``name`` of this run is: a local path or a URI."""
        if self.is_remote:
            return f"{self.location}/{name}"
        return os.path.join(self.location, name)

    def under(self, root: str | os.PathLike) -> RunFolder:
        """The same run under another results root (its copy there)."""
        return RunFolder(os.fspath(root), self.job, self.run_id)

    def is_complete(self) -> bool:
        return self.file(MANIFEST).is_file()

    def prepare(self) -> RunFolder:
        if self.path.exists():
            # an interrupted run: nothing in it is trustworthy without its manifest
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        return self

    def discard(self) -> None:
        """Remove a run that never got anywhere (no checkpoint, no manifest), and its job
        folder if that is left empty."""
        shutil.rmtree(self.path, ignore_errors=True)
        try:
            self.path.parent.rmdir()
        except OSError:  # other runs of the job, or gone already
            pass

    def finalize(self) -> dict:
        """Write ``manifest.json`` listing every result file (size, sha256), last."""
        rels = [p.relative_to(self.path).as_posix() for p in sorted(self.path.rglob("*"))
                if p.is_file()]
        built = manifest.build(self.path, [r for r in rels if is_result(r)],
                               job=self.job, run_id=self.run_id)
        manifest.write_json(self.file(MANIFEST), built)
        return built


@dataclass
class RunResult:
    """What became of a run: its folder (None where it is no folder this machine sees, a
    container's say), its ``metrics.json`` (None when it did not complete) and its exit
    code (0: complete)."""

    run: RunFolder | None
    metrics: dict | None = None
    code: int = 0

    def to_json(self) -> dict:
        """The metrics and where the run folder is (``cvtrain run --json``)."""
        return {**(self.metrics or {}),
                "run_folder": None if self.run is None else self.run.location}


#: what a run on synthetic data says where a difference from the report would be
SYNTHETIC_NOTE = ("synthetic data: the report's numbers are for the real dataset; this run "
                  "tests the pipeline, its difference from them means nothing")


def is_synthetic(metrics: dict | None) -> bool:
    """Whether a run's ``metrics.json`` says it trained on synthetic data (the dataset's
    marker was found, see :data:`cvtrain.data.synthetic.MARKER`)."""
    return bool(((metrics or {}).get("dataset") or {}).get("synthetic"))


def verify(run_path: Path) -> list[str]:
    """Problems with a run folder against its manifest (empty list: complete and intact)."""
    manifest_path = Path(run_path) / MANIFEST
    if not manifest_path.is_file():
        return ["no manifest.json: incomplete run"]
    return manifest.problems(run_path, json.loads(manifest_path.read_text()))


def parse_history(text: str | None) -> list[dict]:
    """The rows of a ``history.csv``: numbers as floats (``epoch`` as an int), blanks and
    unreadable cells as None. Serves resumed training and ``cvtrain results`` alike."""
    rows = []
    for row in csv.DictReader(io.StringIO(text or "")):
        parsed: dict = {}
        for key, value in row.items():
            try:
                parsed[key] = float(value) if value not in (None, "", "None") else None
            except ValueError:
                parsed[key] = None
        if parsed.get("epoch") is not None:
            parsed["epoch"] = int(parsed["epoch"])
        rows.append(parsed)
    return rows
