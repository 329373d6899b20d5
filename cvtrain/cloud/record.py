"""The local record of the jobs submitted from this machine, so ``cvtrain status`` without
ids knows what to show: one JSON line per submission in
``<state dir>/submitted.jsonl`` (:func:`cvtrain.paths.state_dir`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from cvtrain.paths import state_dir


def submitted_file() -> Path:
    return state_dir() / "submitted.jsonl"


def record_submitted(entry: dict) -> None:
    path = submitted_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"submitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
                             **entry}) + "\n")


def submitted_ids(limit: int = 50) -> list[str]:
    """The ids of the jobs cvtrain submitted from here, latest last (at most ``limit``)."""
    path = submitted_file()
    if not path.is_file():
        return []
    ids: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            job_id = json.loads(line).get("jobId")
        except (ValueError, AttributeError):
            continue
        if job_id and job_id not in ids:
            ids.append(job_id)
    return ids[-limit:]
