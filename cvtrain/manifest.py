"""One manifest format for a folder whose files must arrive whole: every file with its
size and sha256, written after the files it names, checked by one verifier.

Three places use it: a run folder's ``manifest.json`` (written last: a run without it is
incomplete, see :mod:`cvtrain.runs`), a checkpoint's ``state.json`` (a copy that mixes two
checkpoints fails it, see :mod:`cvtrain.training.checkpoint`) and shared backbone
features' ``features.json`` (see :mod:`cvtrain.data.birds.shared`). A manifest is a JSON
object: whatever its writer records about the folder, and ``files``, a list of
``{"path": relative "/"-separated path, "size": bytes, "sha256": hex}``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path


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


def entries(folder: Path, paths: Iterable[str]) -> list[dict]:
    """The ``files`` of a manifest: each relative path under ``folder`` with its size and
    sha256, in the order given."""
    folder = Path(folder)
    out = []
    for rel in paths:
        file = folder.joinpath(*rel.split("/"))
        out.append({"path": rel, "size": file.stat().st_size, "sha256": sha256_file(file)})
    return out


def build(folder: Path, paths: Iterable[str], /, **about) -> dict:
    """A manifest of ``paths`` under ``folder``: ``about`` (what the writer records), when
    it was made, and the files."""
    return {**about, "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": entries(folder, paths)}


def problems(folder: Path, manifest: dict) -> list[str]:
    """What differs between ``folder`` and ``manifest``: a file missing, or of another size
    or content (empty: every file it names is there, intact). Files it does not name are
    not its business."""
    folder = Path(folder)
    found = []
    for entry in manifest.get("files") or []:
        rel = entry["path"]
        file = folder.joinpath(*rel.split("/"))
        if not file.is_file():
            found.append(f"{rel}: missing")
        elif file.stat().st_size != entry["size"] or sha256_file(file) != entry["sha256"]:
            found.append(f"{rel}: content differs from manifest")
    return found


def listed(manifest: dict) -> dict[str, dict]:
    """The manifest's files by relative path."""
    return {entry["path"]: entry for entry in manifest.get("files") or []}


def well_formed(manifest) -> bool:
    """Whether ``manifest`` has the shape above: plain relative paths, sizes and digests.
    A reader checks this before trusting any name in it."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        return False
    for entry in manifest["files"]:
        if not (isinstance(entry, dict) and isinstance(entry.get("path"), str)
                and isinstance(entry.get("size"), int) and isinstance(entry.get("sha256"), str)):
            return False
        parts = entry["path"].split("/")
        if entry["path"].startswith("/") or "\\" in entry["path"] or any(
                p in ("", ".", "..") for p in parts):
            return False
    return True
