"""What the Batch backend plans, submits and reports: plain records, no AWS calls
(:class:`cvtrain.cloud.batch.BatchBackend` makes and uses them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cvtrain.cloud.definitions import BatchOptions, set_name
from cvtrain.cloud.entry import EntryPlan
from cvtrain.cloud.status import StatusRow

if TYPE_CHECKING:
    from cvtrain.spec import JobSpec, Variant


@dataclass(frozen=True)
class Target:
    """Where a submission goes: resolved from options, environment and stack outputs."""

    queue: str
    image: str
    results: str
    job_role_arn: str | None = None
    log_group: str | None = None


@dataclass(frozen=True)
class SubmitPlan:
    """A submission, translated and not yet sent: what ``--dry-run`` prints."""

    spec: JobSpec
    variants: list[Variant]
    target: Target
    options: BatchOptions
    definition: dict
    submit_job: dict
    #: the earlier run this job continues (``submit --resume``), else None
    resumes: str | None = None
    #: several jobs as one array job (``submit JOB JOB...``): a variant per job, no sweep
    is_set: bool = False

    @property
    def array(self) -> bool:
        return len(self.variants) > 1

    @property
    def name(self) -> str:
        """The job's name, or the set's."""
        return set_name([v.spec.name for v in self.variants]) if self.is_set else self.spec.name

    def to_json(self) -> dict:
        return {"job_definition": self.definition, "submit_job": self.submit_job}


@dataclass(frozen=True)
class SubmittedRun:
    """One run a submission makes: an array child (``index``) or the single job."""

    index: int | None
    overrides: list[str]
    run_id: str
    location: str
    #: the job it runs (a set's children run different jobs)
    job: str = ""


@dataclass(frozen=True)
class Submission:
    """A job (or array job) Batch accepted, and the runs it will leave."""

    job_id: str
    job_name: str
    definition_arn: str
    registered: bool
    runs: list[SubmittedRun]
    #: what was checked before submitting (empty with ``check=False``)
    checks: list[str] = field(default_factory=list)
    #: the image the job runs (an ECR image by digest)
    image: str = ""

    @property
    def array(self) -> bool:
        return self.runs[0].index is not None


@dataclass(frozen=True)
class StatusReport:
    rows: list[StatusRow]
    hints: list[str]
    #: no ids were given and none are recorded here (see ``record``)
    nothing_recorded: bool = False
    record: Path | None = None


@dataclass(frozen=True)
class Entry:
    """A Batch container's job: the plan read from its environment and the spec to run."""

    plan: EntryPlan
    spec: JobSpec
    location: str
