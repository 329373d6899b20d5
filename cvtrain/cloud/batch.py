"""The AWS Batch runner: :class:`BatchRunner` submits, observes and cancels jobs, and runs
a job's variant inside a Batch container. Its methods return plain data; the CLI
(:mod:`cvtrain.cli.cloud`) parses options and prints.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cvtrain.cloud import aws, record
from cvtrain.cloud.definitions import (
    DEFAULT_TIMEOUT_SECONDS,
    ENV_ARRAY_INDEX,
    ENV_JOB_ID,
    ENV_RESULTS,
    ENV_RUN_ID,
    ENV_SPEC,
    ENV_SPECS,
    ENV_TASK,
    MAX_ARRAY_SIZE,
    BatchOptions,
    check_resources,
    job_definition,
    run_id_for,
    set_name,
    submit_job_kwargs,
)
from cvtrain.cloud.entry import entry_plan
from cvtrain.cloud.plans import (
    BatchChild,
    Entry,
    StatusReport,
    Submission,
    SubmitPlan,
    SubmittedJob,
    Target,
)
from cvtrain.cloud.status import TERMINAL_STATES, status_rows
from cvtrain.errors import UsageError
from cvtrain.runs import RunFolder, RunResult

if TYPE_CHECKING:
    from cvtrain.spec import JobSpec, Variant

#: CloudFormation outputs of infra/cvtrain.yaml that cvtrain reads
OUT_BUCKET = "BucketName"
OUT_REPOSITORY = "RepositoryUri"
OUT_SPOT_QUEUE = "SpotQueue"
OUT_ON_DEMAND_QUEUE = "OnDemandQueue"
OUT_JOB_ROLE = "JobRoleArn"
OUT_LOG_GROUP = "LogGroup"
OUT_RESULTS = "ResultsUri"


class BatchRunner:
    """AWS Batch as a cvtrain runner: a job's run in a container on a cloud GPU. How our
    words map onto Batch's:

    ============================  =========================================================
    cvtrain                       AWS Batch
    ============================  =========================================================
    the image, GPUs, vCPUs,       a *job definition* (``containerProperties``: image,
    memory, results URI, retry    ``resourceRequirements``, ``environment``, ``command``
    and timeout policy            ``["run-batch"]``; ``retryStrategy``; ``timeout``), named
                                  ``cvtrain-<hash of its content>`` so an identical one is
                                  reused rather than registered again
    a job spec (resolved YAML)    a *job* of that definition: the spec travels base64 in
                                  the job's environment (``CVTRAIN_SPEC_B64``)
    a sweep (``--sweep k=a,b``)   an *array job*, one child per variant; variants are a
                                  JSON list in ``CVTRAIN_SWEEP``, child N takes variant
                                  ``AWS_BATCH_JOB_ARRAY_INDEX`` and applies it as ``--set``
    results URI                   ``CVTRAIN_RESULTS`` in the job definition's environment
    run id                        derived from ``AWS_BATCH_JOB_ID`` (+ array index): the
                                  same in every attempt, so a retried attempt resumes
                                  from the checkpoint in the results URI
    SIGTERM → checkpoint, exit 75 ``retryStrategy.evaluateOnExit``: RETRY on exit code 75
    spot reclamation              and on status reason ``Host EC2*``; EXIT on anything
                                  else (user errors, exit 2/3/4/5, bugs, exit 1)
    ``--spot`` / ``--on-demand``  which *job queue* (the stack has one of each)
    ============================  =========================================================

    ``env`` (default ``os.environ``) supplies ``CVTRAIN_BATCH_QUEUE`` / ``CVTRAIN_IMAGE`` /
    ``CVTRAIN_RESULTS`` / ``CVTRAIN_STACK`` when submitting and the container's variables
    in :meth:`entry`; ``version`` picks the stack's image tag (``<version>-gpu``).
    """

    name = "aws-batch"

    def __init__(self, env: Mapping[str, str] | None = None, version: str | None = None):
        if version is None:
            from cvtrain import __version__ as version
        self.env = os.environ if env is None else env
        self.version = version

    # ------------------------------------------------------------------ submitting

    @staticmethod
    def refuse_local_paths(spec: JobSpec, variants: Sequence[Variant] = ()) -> None:
        """A Batch container cannot see this machine's files: refuse any local path in the
        spec or a sweep variant (a dataset's ``path``, a model's ``weights``...)."""
        from cvtrain.spec import local_paths

        if local := local_paths(spec):
            raise UsageError(f"{local[0].key}: {local[0].value}: a local path is not visible "
                             "in a Batch container; expected an s3:// URI (upload it with "
                             "`cvtrain data push`)")
        for i, variant in enumerate(variants):
            if variant.overrides and (local := local_paths(variant.spec)):
                raise UsageError(f"--sweep variant {i}: {local[0].key}: {local[0].value}: "
                                 "expected an s3:// URI")

    def resolve_target(self, *, queue: str | None = None, image: str | None = None,
                       results: str | None = None, spot: bool = True, stack: str | None = None,
                       outputs: Mapping[str, str] | None = None) -> Target:
        """Options first, then ``CVTRAIN_BATCH_QUEUE`` / ``CVTRAIN_IMAGE`` /
        ``CVTRAIN_RESULTS``, then the stack's outputs (``stack`` or ``CVTRAIN_STACK``; read
        from CloudFormation unless ``outputs`` are given). Nothing is hard-coded."""
        env = self.env
        stack = stack or env.get("CVTRAIN_STACK") or None
        if outputs is None:
            outputs = aws.stack_outputs(stack) if stack else {}
        queue = queue or env.get("CVTRAIN_BATCH_QUEUE") or outputs.get(
            OUT_SPOT_QUEUE if spot else OUT_ON_DEMAND_QUEUE)
        image = image or env.get("CVTRAIN_IMAGE") or (
            f"{outputs[OUT_REPOSITORY]}:{self.version}-gpu" if outputs.get(OUT_REPOSITORY)
            else None)
        results = results or env.get("CVTRAIN_RESULTS") or outputs.get(OUT_RESULTS) or (
            f"s3://{outputs[OUT_BUCKET]}/runs" if outputs.get(OUT_BUCKET) else None)
        missing = [name for name, value in (("--queue", queue), ("--image", image),
                                            ("--results", results)) if not value]
        if missing:
            raise UsageError(f"{', '.join(missing)}: not given; expected the option, "
                             "$CVTRAIN_BATCH_QUEUE / $CVTRAIN_IMAGE / $CVTRAIN_RESULTS, or "
                             "--stack NAME (a stack of infra/cvtrain.yaml)")
        if not results.startswith("s3://"):
            raise UsageError(f"--results {results}: expected an s3://bucket/prefix URI (a "
                             "Batch container cannot write to a local folder)")
        return Target(queue=queue, image=image, results=results.rstrip("/"),
                      job_role_arn=outputs.get(OUT_JOB_ROLE),
                      log_group=outputs.get(OUT_LOG_GROUP))

    def plan(self, spec: JobSpec, sweep: Sequence[str] = (), *, queue: str | None = None,
             image: str | None = None, results: str | None = None, spot: bool = True,
             stack: str | None = None, gpus: int = 1, vcpus: int | None = None,
             memory_mib: int | None = None, attempts: int = 3,
             timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS) -> SubmitPlan:
        """Check ``spec`` and every variant of ``sweep`` (``["key=v1,v2", ...]``), resolve
        the target, translate. No AWS call before the spec and its variants pass; then at
        most the stack's outputs (CloudFormation)."""
        from cvtrain.spec import expand_sweep

        self.refuse_local_paths(spec)
        variants = expand_sweep(spec, sweep, limit=MAX_ARRAY_SIZE)
        self.refuse_local_paths(spec, variants)
        check_resources(gpus, attempts, timeout_seconds)
        target = self.resolve_target(queue=queue, image=image, results=results, spot=spot,
                                     stack=stack)
        options = BatchOptions(
            image=target.image, queue=target.queue, results=target.results, gpus=gpus,
            vcpus=vcpus, memory_mib=memory_mib, attempts=attempts,
            timeout_seconds=timeout_seconds, job_role_arn=target.job_role_arn,
            log_group=target.log_group)
        definition = job_definition(options)
        kwargs = submit_job_kwargs(spec.name, spec.to_yaml(), [v.overrides for v in variants],
                                   definition["jobDefinitionName"], target.queue)
        return SubmitPlan(spec=spec, variants=variants, target=target, options=options,
                          definition=definition, submit_job=kwargs)

    def plan_set(self, specs: Sequence[JobSpec], **options) -> SubmitPlan:
        """Several jobs as one array job, a child per job (in the order given), with the
        options of :meth:`plan` for all; one job is :meth:`plan`'s. Each child trains and
        writes its own run (``<results>/<job>/<parent id>-<index>``) and is retried, resumed
        and followed as a sweep's children are. Head jobs that train on the same backbone
        features split the set: one features job, the heads waiting for it, the other jobs
        waiting for nothing (:mod:`cvtrain.cloud.setparts`)."""
        from cvtrain.cloud.setparts import split_set
        from cvtrain.spec import Variant

        if len(specs) == 1:
            return self.plan(specs[0], **options)
        for spec in specs:
            self.refuse_local_paths(spec)
        if len(specs) > MAX_ARRAY_SIZE:
            raise UsageError(f"{len(specs)} jobs: expected at most {MAX_ARRAY_SIZE} in one set")
        plan = self.plan(specs[0], **options)
        names = [s.name for s in specs]
        kwargs = submit_job_kwargs(set_name(names), "", [[]], plan.definition["jobDefinitionName"],
                                   plan.target.queue, set_specs=[s.to_yaml() for s in specs])
        kwargs["tags"] = {"cvtrain:job": set_name(names)[:256]}
        parts = split_set(specs, plan.definition["jobDefinitionName"], plan.target.queue)
        return dataclasses.replace(plan, variants=[Variant([], s) for s in specs],
                                   submit_job=kwargs, is_set=True, parts=tuple(parts))

    def plan_resume(self, job_id: str, **options) -> SubmitPlan:
        """A new job that continues the run of an earlier one (``JOB_ID`` or an array
        child ``PARENT:N``) that timed out, failed or was cancelled: the same resolved spec
        (with the child's variant), results root and run id, so the container resumes
        from the run's checkpoint in the bucket; ``options`` as :meth:`plan` (queue, image,
        GPUs, timeout...) apply to the new job."""
        from cvtrain.spec import spec_from_text

        job = aws.describe_jobs([job_id])[0]
        state = job.get("status")
        if (job.get("arrayProperties") or {}).get("size"):
            raise UsageError(f"--resume {job_id}: an array job; resume its children one by "
                             f"one, e.g. --resume {job_id}:0")
        parent = aws.describe_jobs([job_id.split(":", 1)[0]])[0] if ":" in job_id else job
        env = {e["name"]: e["value"] for e in
               (parent.get("container") or {}).get("environment") or []}
        env.update({e["name"]: e["value"] for e in
                    ((parent.get("containerOverrides") or {}).get("environment") or [])})
        if env.get(ENV_TASK):
            raise UsageError(f"--resume {job_id}: a features job leaves no run to continue; "
                             "resume the head jobs that waited for it (each extracts the "
                             "features it does not find)")
        if state not in TERMINAL_STATES:
            raise UsageError(f"--resume {job_id}: the job is {state}; wait for it to end or "
                             "cancel it first (two jobs must not write one run)")
        if state == "SUCCEEDED":
            raise UsageError(f"--resume {job_id}: the job SUCCEEDED; its run is complete")
        if not (env.get(ENV_SPEC) or env.get(ENV_SPECS)):
            raise UsageError(f"--resume {job_id}: not a job submitted by cvtrain (no "
                             f"${ENV_SPEC} in its environment)")
        results = env.get(ENV_RESULTS) or aws.definition_environment(
            job.get("jobDefinition")).get(ENV_RESULTS)
        if not results:
            raise UsageError(f"--resume {job_id}: no ${ENV_RESULTS} in its environment or "
                             "its job definition")
        if options.get("results") and options["results"].rstrip("/") != results:
            raise UsageError(f"--results {options['results']}: job {job_id} wrote its run "
                             f"under {results}; a resumed run stays there")
        parent_id, _, index = job_id.partition(":")
        entry = entry_plan({**env, ENV_JOB_ID: parent_id, ENV_ARRAY_INDEX: index,
                            ENV_RESULTS: results})
        spec = spec_from_text(entry.spec_yaml, f"job {job_id}", entry.overrides)
        plan = self.plan(spec, **{**options, "results": results})
        overrides = plan.submit_job["containerOverrides"]
        overrides["environment"] = [*overrides["environment"],
                                    {"name": ENV_RUN_ID, "value": entry.run_id}]
        return dataclasses.replace(plan, resumes=entry.run_id)

    @staticmethod
    def preflight(target: Target, specs: Sequence[JobSpec] = (), gpus: int = 1) -> list[str]:
        """What is checked before submitting: :func:`cvtrain.cloud.preflight.preflight`."""
        from cvtrain.cloud.preflight import preflight

        return preflight(target, specs, gpus)

    def submit(self, plan: SubmitPlan, check: bool = True) -> Submission:
        """Pre-flight checks (unless ``check`` is false), the job definition (reused when an
        identical one is ACTIVE), the job; recorded here for ``cvtrain status``."""
        checks = (self.preflight(plan.target, [v.spec for v in plan.variants],
                                 plan.options.gpus) if check else [])
        plan = self.pinned(plan)
        arn, registered = aws.ensure_job_definition(plan.definition)
        if plan.parts:
            return self._submit_parts(plan, arn, registered, checks)
        made = aws.submit({**plan.submit_job, "jobDefinition": arn})
        job_id = made["jobId"]
        record.record_submitted({
            "jobId": job_id, "jobName": made["jobName"], "queue": plan.target.queue,
            "image": plan.options.image,
            "results": plan.target.results, "job": plan.name,
            "arraySize": len(plan.variants) if plan.array else None})
        runs = []
        for i, variant in enumerate(plan.variants):
            index = i if plan.array else None
            run_id = plan.resumes or run_id_for(job_id, index)
            name = variant.spec.name
            runs.append(BatchChild(index, variant.overrides,
                                   RunFolder(plan.target.results, name, run_id)))
        return Submission(job_id=job_id, job_name=made["jobName"], definition_arn=arn,
                          registered=registered, children=runs, checks=checks,
                          image=plan.options.image)

    @staticmethod
    def _submit_parts(plan: SubmitPlan, arn: str, registered: bool,
                      checks: list[str]) -> Submission:
        """A split set: each part in turn, a heads part ``dependsOn`` its features job;
        every Batch job recorded for ``cvtrain status``."""
        names = [v.spec.name for v in plan.variants]
        ids: list[str] = []
        jobs: list[SubmittedJob] = []
        runs: dict[int, BatchChild] = {}
        for part in plan.parts:
            after = ids[part.after] if part.after is not None else None
            made = aws.submit({**part.submit_job, "jobDefinition": arn,
                               **({"dependsOn": [{"jobId": after}]} if after else {})})
            job_id = made["jobId"]
            ids.append(job_id)
            size = len(part.indices) if part.array else None
            record.record_submitted({
                "jobId": job_id, "jobName": made["jobName"], "queue": plan.target.queue,
                "image": plan.options.image, "results": plan.target.results,
                "job": part.submit_job["tags"]["cvtrain:job"], "arraySize": size,
                "dependsOn": after})
            jobs.append(SubmittedJob(part.role, job_id, made["jobName"], size, after,
                                     tuple(names[i] for i in part.indices)))
            if part.role == "features":
                continue
            for position, i in enumerate(part.indices):
                index = position if part.array else None
                run_id = run_id_for(job_id, index)
                runs[i] = BatchChild(index, [], RunFolder(plan.target.results, names[i], run_id),
                                     batch_job=job_id)
        return Submission(job_id=ids[0], job_name=jobs[0].job_name, definition_arn=arn,
                          registered=registered, children=[runs[i] for i in sorted(runs)],
                          checks=checks, image=plan.options.image, jobs=jobs)

    @staticmethod
    def pinned(plan: SubmitPlan) -> SubmitPlan:
        """The plan with its ECR image given by the digest its tag points to now (one ECR
        call), and the job definition that follows from it."""
        image = aws.pinned_image(plan.options.image)
        if image == plan.options.image:
            return plan
        options = dataclasses.replace(plan.options, image=image)
        definition = job_definition(options)
        return dataclasses.replace(
            plan, options=options, definition=definition,
            submit_job={**plan.submit_job, "jobDefinition": definition["jobDefinitionName"]})

    # ------------------------------------------------------------------ observing

    def status(self, job_ids: Sequence[str] = (), now: datetime | None = None) -> StatusReport:
        """Rows and hints for ``job_ids``, else for the jobs recorded here (those Batch has
        forgotten are left out)."""
        ids = list(job_ids)
        if ids:
            return StatusReport(*status_rows(aws.with_images(aws.describe_jobs(ids)), now=now))
        where = record.submitted_file()
        ids = record.submitted_ids()
        if not ids:
            return StatusReport([], [], nothing_recorded=True, record=where)
        jobs = aws.with_images(aws.describe_jobs(ids, missing_ok=True))
        return StatusReport(*status_rows(jobs, now=now), record=where)

    @staticmethod
    def logs(job_id: str, follow: bool = False, poll_seconds: float = 5.0) -> Iterator[str]:
        """The lines of a job's (latest attempt's) log; with ``follow`` until it ends."""
        return aws.log_lines(job_id, follow=follow, poll_seconds=poll_seconds)

    @staticmethod
    def cancel(job_id: str, reason: str = "cancelled with cvtrain cancel") -> None:
        """Terminate a job whatever its state (an array parent: all its children)."""
        aws.cancel(job_id, reason)

    # ------------------------------------------------------------------ in the container

    def entry(self) -> Entry:
        """The job of this Batch container, from its environment: the spec with this
        child's variant applied, and where its run goes."""
        from cvtrain.spec import spec_from_text

        plan = entry_plan(self.env)
        spec = spec_from_text(plan.spec_yaml, f"${ENV_SPEC}", plan.overrides)
        return Entry(plan, spec, RunFolder(plan.results, spec.name, plan.run_id))

    @staticmethod
    def run_entry(entry: Entry) -> RunResult:
        """Run it here with the local runner, with the run id every attempt shares (so a
        retried attempt resumes from the checkpoint in the results); what became of it."""
        from cvtrain.data.birds.shared import sharing
        from cvtrain.runners import get_runner
        from cvtrain.training.batch_parts import configure_threads

        plan = entry.plan
        configure_threads([entry.spec])  # the process's threads per op, before the job
        with sharing(plan.results):  # backbone features: fetched from, or shared to, results
            return get_runner("local").run(entry.spec, out=Path(plan.out), run_id=plan.run_id,
                                           results=plan.results)

    @staticmethod
    def run_features(entry: Entry, log=None) -> dict:
        """A features job: extract the backbone features of the entry's head spec (unless
        they are in the results root already) and share them there; their details."""
        from cvtrain.data.birds.shared import extract_and_share

        return extract_and_share(entry.spec, entry.plan.results, log=log)


__all__ = ["BatchChild", "BatchOptions", "BatchRunner", "Entry", "StatusReport", "SubmitPlan",
           "Submission", "Target"]
