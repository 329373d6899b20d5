"""What the Batch runner plans, submits and reports: plain records, no AWS calls
(:class:`cvtrain.cloud.batch.BatchRunner` makes and uses them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cvtrain.cloud.definitions import BatchOptions, set_name
from cvtrain.cloud.entry import EntryPlan
from cvtrain.cloud.status import StatusRow
from cvtrain.runs import RunFolder

if TYPE_CHECKING:
    from cvtrain.cloud.setparts import Part
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
    #: a set whose head jobs share one backbone pass, as the Batch jobs that submit it
    #: (:mod:`cvtrain.cloud.setparts`); empty: ``submit_job`` is the one submission
    parts: tuple[Part, ...] = ()

    @property
    def array(self) -> bool:
        return len(self.variants) > 1

    @property
    def name(self) -> str:
        """The job's name, or the set's."""
        return set_name([v.spec.name for v in self.variants]) if self.is_set else self.spec.name

    def to_json(self) -> dict:
        if self.parts:  # several submissions: each with what it runs and waits for
            names = [v.spec.name for v in self.variants]
            return {"job_definition": self.definition,
                    "parts": [{"role": p.role, "jobs": [names[i] for i in p.indices],
                               "after_part": p.after, "submit_job": p.submit_job}
                              for p in self.parts]}
        return {"job_definition": self.definition, "submit_job": self.submit_job}


@dataclass(frozen=True)
class BatchChild:
    """One Batch job of a submission that leaves a run: an array child (``index``) or the
    single job, the run folder it will leave in the results."""

    index: int | None
    overrides: list[str]
    run: RunFolder
    #: the Batch job (array parent) it belongs to, when a set was split in several
    batch_job: str = ""


@dataclass(frozen=True)
class SubmittedJob:
    """One Batch job of a split set: features, heads or jobs (:mod:`cvtrain.cloud.setparts`)."""

    role: str
    job_id: str
    job_name: str
    #: array size, None for a single job
    size: int | None = None
    #: the job id it waits for (``dependsOn``)
    after: str | None = None
    #: the set's jobs it runs (for a features job: the heads it extracts for)
    jobs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Submission:
    """A job (or array job) Batch accepted, and the runs it will leave."""

    job_id: str
    job_name: str
    definition_arn: str
    registered: bool
    children: list[BatchChild]
    #: what was checked before submitting (empty with ``check=False``)
    checks: list[str] = field(default_factory=list)
    #: the image the job runs (an ECR image by digest)
    image: str = ""
    #: a split set's Batch jobs in the order submitted (``job_id`` is the first's)
    jobs: list[SubmittedJob] = field(default_factory=list)

    @property
    def array(self) -> bool:
        return any(child.index is not None for child in self.children)

    def child_id(self, child: BatchChild) -> str:
        """The Batch job id of one child: ``PARENT:N`` for an array child."""
        parent = child.batch_job or self.job_id
        return parent if child.index is None else f"{parent}:{child.index}"


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
    run: RunFolder
