"""The run folder: ``<out>/<job-name>/<run-id>/`` and the files every run leaves in it.

The contract the storage, docker and cloud backends build on:

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
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path

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


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, data) -> None:
    """Write JSON atomically (temp file + rename), so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class RunDir:
    """One run's folder: ``claim`` picks it, ``prepare`` makes it, ``finalize`` seals it."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def claim(cls, out: Path, job_name: str, run_id: str | None = None) -> RunDir:
        """The folder of this run (a new id when none is given). Nothing is written yet:
        call :meth:`prepare` once the run is ready to start; a complete run already there
        is the caller's to reuse or refuse."""
        return cls(Path(run_location(out, job_name, run_id or new_run_id())))

    def prepare(self) -> RunDir:
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

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def job_name(self) -> str:
        return self.path.parent.name

    def file(self, name: str) -> Path:
        return self.path / name

    def is_complete(self) -> bool:
        return (self.path / MANIFEST).is_file()

    def finalize(self) -> dict:
        """Write ``manifest.json`` listing every result file (size, sha256), last."""
        files = []
        for p in sorted(self.path.rglob("*")):
            rel = p.relative_to(self.path).as_posix()
            if p.is_file() and is_result(rel):
                files.append({"path": rel, "size": p.stat().st_size, "sha256": sha256_file(p)})
        manifest = {"job": self.job_name, "run_id": self.run_id,
                    "created": datetime.now(UTC).isoformat(timespec="seconds"),
                    "files": files}
        write_json(self.path / MANIFEST, manifest)
        return manifest


#: what a run on synthetic data says where a difference from the report would be
SYNTHETIC_NOTE = ("synthetic data: the report's numbers are for the real dataset; this run "
                  "tests the pipeline, its difference from them means nothing")


def is_synthetic(metrics: dict | None) -> bool:
    """Whether a run's ``metrics.json`` says it trained on synthetic data (the dataset's
    marker was found, see :data:`cvtrain.data.synthetic.MARKER`)."""
    return bool(((metrics or {}).get("dataset") or {}).get("synthetic"))


def verify(run_path: Path) -> list[str]:
    """Problems with a run folder against its manifest (empty list: complete and intact)."""
    run_path = Path(run_path)
    manifest_path = run_path / MANIFEST
    if not manifest_path.is_file():
        return ["no manifest.json: incomplete run"]
    problems = []
    for entry in json.loads(manifest_path.read_text())["files"]:
        p = run_path / entry["path"]
        if not p.is_file():
            problems.append(f"{entry['path']}: missing")
        elif p.stat().st_size != entry["size"] or sha256_file(p) != entry["sha256"]:
            problems.append(f"{entry['path']}: content differs from manifest")
    return problems


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
