"""A run's result handed from one cvtrain process to the one that started it: the run's
metrics and run folder, written by ``cvtrain run`` at ``$CVTRAIN_RESULT_FILE`` when that is
set (the docker runner sets it in the container, to fill a set's table)."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath

from cvtrain.runs import RunFolder, RunResult

RESULT_FILE_ENV = "CVTRAIN_RESULT_FILE"


def write_result(result: RunResult, environ=os.environ) -> None:
    """Write ``result`` (metrics and ``run_folder``) where ``$CVTRAIN_RESULT_FILE`` says, if
    it says; whole or not at all (a temporary file renamed)."""
    target = environ.get(RESULT_FILE_ENV)
    if not target:
        return
    path = Path(target)
    part = path.with_name(path.name + ".part")
    part.write_text(json.dumps(result.to_json()), encoding="utf-8")
    part.replace(path)


def read_result(path: Path, shown: dict[str, Path], code: int = 0) -> RunResult:
    """The result a container left at ``path``, its run folder as this machine sees it: a
    container path under a mount in ``shown`` (container folder -> host folder) becomes
    the host's, any other none; nothing (or nothing readable) there: no folder, no metrics.
    ``code``: the container's exit code."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict):
        return RunResult(None, None, code)
    folder = doc.pop("run_folder", None)
    host = None
    if isinstance(folder, str):
        inside = PurePosixPath(folder)
        for mount, where in shown.items():
            if inside.is_relative_to(mount):
                host = RunFolder.at(Path(where) / inside.relative_to(mount))
                break
    return RunResult(host, doc, code)


__all__ = ["RESULT_FILE_ENV", "read_result", "write_result"]
