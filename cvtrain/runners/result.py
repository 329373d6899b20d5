"""A run's result handed from one cvtrain process to the one that started it: the run's
metrics and run folder, written by ``cvtrain run`` at ``$CVTRAIN_RESULT_FILE`` when that is
set (the docker backend sets it in the container, to fill a set's table)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

RESULT_FILE_ENV = "CVTRAIN_RESULT_FILE"


@dataclass
class RunFolder:
    path: Path | None


@dataclass
class HandedResult:
    """What :class:`~cvtrain.training.RunResult` says to a set's table: the metrics and
    the run folder (None when it is no folder of this machine's)."""

    metrics: dict
    run: RunFolder


def write_result(doc: dict, environ=os.environ) -> None:
    """Write ``doc`` (metrics and ``run_folder``) where ``$CVTRAIN_RESULT_FILE`` says, if
    it says; whole or not at all (a temporary file renamed)."""
    target = environ.get(RESULT_FILE_ENV)
    if not target:
        return
    path = Path(target)
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(doc), encoding="utf-8")
    part.replace(path)


def read_result(path: Path, shown: dict[str, Path]) -> HandedResult | None:
    """The result a container left at ``path`` (None: none, or unreadable), its run folder
    as this machine sees it: a container path under a mount in ``shown`` (container folder
    -> host folder) becomes the host path, any other one None."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    folder = doc.pop("run_folder", None)
    host = None
    if isinstance(folder, str):
        inside = PurePosixPath(folder)
        for mount, where in shown.items():
            if inside.is_relative_to(mount):
                host = Path(where) / inside.relative_to(mount)
                break
    return HandedResult(doc, RunFolder(host))


__all__ = ["RESULT_FILE_ENV", "HandedResult", "read_result", "write_result"]
