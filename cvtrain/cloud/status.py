"""``cvtrain status`` rows from ``describe_jobs`` output: state, attempts, reason, start and
duration, array children's counts, and a hint for jobs that look stuck. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cvtrain.training.checkpoint import EXIT_TERMINATED

#: a job RUNNABLE for longer than this gets a capacity hint in ``cvtrain status``
RUNNABLE_HINT_SECONDS = 600
TERMINAL_STATES = ("SUCCEEDED", "FAILED")


@dataclass(frozen=True)
class StatusRow:
    job: str
    job_id: str
    state: str
    attempts: int
    reason: str
    started: str
    duration: str
    image: str = ""  # what the job runs: an ECR image by digest when cvtrain submitted it


def short_image(image: str) -> str:
    """``repository@sha256:<12 hex>`` or ``repository:tag``, without the registry host."""
    name = image.split("/", 1)[1] if "/" in image and "." in image.split("/", 1)[0] else image
    if "@sha256:" in name:
        repo, digest = name.split("@sha256:", 1)
        return f"{repo}@sha256:{digest[:12]}"
    return name


def _ms(value) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, UTC) if value else None


def format_duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _reason(job: Mapping) -> str:
    parts = []
    container = job.get("container") or {}
    attempts = job.get("attempts") or []
    last = (attempts[-1].get("container") or {}) if attempts else {}
    code = container.get("exitCode", last.get("exitCode"))
    if code not in (None, 0):
        parts.append(f"exit {code}" + (" (SIGTERM, checkpoint saved)"
                                        if code == EXIT_TERMINATED else ""))
    for text in (job.get("statusReason"), container.get("reason") or last.get("reason")):
        if text and text not in parts:
            parts.append(str(text))
    waits = [d.get("jobId") for d in job.get("dependsOn") or [] if d.get("jobId")]
    if waits and job.get("status") in ("SUBMITTED", "PENDING"):
        parts.append(f"waits for {', '.join(waits)}")
    return "; ".join(parts)


def _array_summary(job: Mapping) -> str:
    summary = (job.get("arrayProperties") or {}).get("statusSummary") or {}
    size = (job.get("arrayProperties") or {}).get("size")
    counts = ", ".join(f"{n} {s.lower()}" for s, n in summary.items() if n)
    if size:
        return f"{size} children" + (f": {counts}" if counts else "")
    return counts


def stuck_hint(job: Mapping, now: datetime) -> str | None:
    """A hint for a job RUNNABLE for longer than :data:`RUNNABLE_HINT_SECONDS`."""
    created = _ms(job.get("createdAt"))
    if (job.get("status") != "RUNNABLE" or not created
            or (now - created).total_seconds() <= RUNNABLE_HINT_SECONDS):
        return None
    waited = format_duration((now - created).total_seconds())
    return (f"{job.get('jobId')}: RUNNABLE for {waited}: the queue's compute environments "
            "cannot place it. Check their max vCPUs (>= the job's vCPUs), instance types "
            "(a GPU type with enough GPUs and memory), spot capacity in the region "
            "(try --on-demand), and the account's EC2 vCPU quota for G instances.")


def status_rows(jobs: Sequence[Mapping], now: datetime | None = None
                ) -> tuple[list[StatusRow], list[str]]:
    """Table rows for ``describe_jobs`` output, and hints for jobs that look stuck."""
    now = now or datetime.now(UTC)
    rows, hints = [], []
    for job in jobs:
        started, stopped = _ms(job.get("startedAt")), _ms(job.get("stoppedAt"))
        duration = ""
        if started:
            duration = format_duration(((stopped or now) - started).total_seconds())
        summary = _array_summary(job)
        reason = _reason(job)
        if summary:
            reason = f"{summary}" + (f"; {reason}" if reason else "")
        rows.append(StatusRow(
            job=job.get("jobName", ""), job_id=job.get("jobId", ""),
            state=job.get("status", "?"), attempts=len(job.get("attempts") or []),
            reason=reason, started=started.strftime("%Y-%m-%d %H:%M:%S") if started else "",
            duration=duration, image=(job.get("container") or {}).get("image", "")))
        if hint := stuck_hint(job, now):
            hints.append(hint)
    return rows, hints
