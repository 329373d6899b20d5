"""``cvtrain submit / status / logs / cancel``: jobs on AWS Batch; ``run-batch`` (hidden) is
what a Batch container runs. Parsing and printing only: the translation lives in
:mod:`cvtrain.cloud.batch`, the AWS calls in :mod:`cvtrain.cloud.aws` (boto3 is imported
there, inside functions)."""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path

import typer


class CloudBackend(StrEnum):
    aws_batch = "aws-batch"


def submit(
    job: str = typer.Argument(..., help="Job file, or a job name under the jobs folder."),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE",
                                   help="Override a spec value (repeatable; values are YAML)."),
    sweep: list[str] = typer.Option([], "--sweep", metavar="KEY=V1,V2,...",
                                    help="Run one job per value (repeatable: every "
                                         "combination); becomes one array job."),
    backend: CloudBackend = typer.Option(CloudBackend.aws_batch, "--backend",
                                         help="Where the jobs run (aws-batch only for now)."),
    queue: str = typer.Option(None, "--queue", help="Batch job queue \\[default: "
                              "$CVTRAIN_BATCH_QUEUE, else the stack's spot or on-demand queue]."),
    image: str = typer.Option(None, "--image", help="Image URI \\[default: $CVTRAIN_IMAGE, else "
                              "the stack's ECR repository, tag <version>-gpu]."),
    gpus: int = typer.Option(1, "--gpus", min=0, max=16, help="GPUs per job."),
    vcpus: int = typer.Option(None, "--vcpus", min=1, help="vCPUs per job \\[default: 4 per "
                              "GPU]."),
    memory: int = typer.Option(None, "--memory", min=512, metavar="MiB",
                               help="Memory per job in MiB \\[default: 14000 per GPU]."),
    results: str = typer.Option(None, "--results", metavar="URI",
                                help="s3://bucket/prefix for the run folders \\[default: "
                                     "$CVTRAIN_RESULTS, else the stack's bucket /runs]."),
    spot: bool = typer.Option(True, "--spot/--on-demand",
                              help="Which of the stack's queues, when --queue is not given."),
    stack: str = typer.Option(None, "--stack", help="CloudFormation stack of "
                              "infra/cvtrain.yaml whose outputs give the defaults "
                              "\\[default: $CVTRAIN_STACK]."),
    attempts: int = typer.Option(3, "--attempts", min=1, max=10,
                                 help="Attempts per job (spot reclamation, SIGTERM exit 75)."),
    timeout_hours: float = typer.Option(24.0, "--timeout-hours", min=0.02,
                                        help="Time limit of one attempt."),
    seed: int = typer.Option(None, "--seed", help="Seed for every job."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the job definition and the "
                                 "submission as JSON; call nothing."),
    check: bool = typer.Option(True, "--check/--no-check", help="Check credentials, queue, "
                               "image and bucket before submitting."),
) -> None:
    """Submit JOB (or a sweep of it) to GPU instances on AWS Batch; print ids and results."""
    from cvtrain import __version__
    from cvtrain.catalog import find_job
    from cvtrain.cloud import aws, batch
    from cvtrain.errors import UsageError
    from cvtrain.spec import apply_overrides, load_spec, validate

    spec = load_spec(find_job(job), set_, seed=seed)
    if local := batch.local_paths(spec):
        raise UsageError(f"{local[0]}: a local path is not visible in a Batch container; "
                         "expected an s3:// URI (upload it with `cvtrain data push`)")
    variants = batch.parse_sweep(sweep)
    doc = spec.model_dump(mode="json")
    for i, variant in enumerate(variants):
        if variant:
            checked = validate(apply_overrides(doc, variant), f"--sweep variant {i}")
            if local := batch.local_paths(checked):
                raise UsageError(f"--sweep variant {i}: {local[0]}: expected an s3:// URI")
    target = aws.resolve_target(queue=queue, image=image, results=results, spot=spot,
                                stack=stack, version=__version__)
    options = batch.BatchOptions(
        image=target.image, queue=target.queue, results=target.results, gpus=gpus,
        vcpus=vcpus, memory_mib=memory, attempts=attempts,
        timeout_seconds=int(timeout_hours * 3600), job_role_arn=target.job_role_arn,
        log_group=target.log_group)
    definition = batch.job_definition(options)
    spec_yaml = spec.to_yaml()
    kwargs = batch.submit_job_kwargs(spec.name, spec_yaml, variants,
                                     definition["jobDefinitionName"], target.queue)
    if dry_run:
        print(json.dumps({"job_definition": definition, "submit_job": kwargs}, indent=2))
        return
    if check:
        for line in aws.preflight(target):
            print(f"ok  {line}")
    arn, registered = aws.ensure_job_definition(definition)
    print(f"{'registered' if registered else 'reusing'} job definition {arn}")
    kwargs["jobDefinition"] = arn
    made = aws.submit(kwargs)
    job_id = made["jobId"]
    array = len(variants) > 1
    aws.record_submitted({"jobId": job_id, "jobName": made["jobName"], "queue": target.queue,
                          "results": target.results, "job": spec.name,
                          "arraySize": len(variants) if array else None})
    print(f"submitted {made['jobName']}: {job_id}" + (f" (array of {len(variants)})"
                                                        if array else ""))
    if array:
        for i, variant in enumerate(variants[:50]):
            run_id = batch.run_id_for(job_id, i)
            print(f"  {job_id}:{i}  {' '.join(variant)}  -> "
                  f"{batch.results_location(target.results, spec.name, run_id)}")
        if len(variants) > 50:
            print(f"  ... and {len(variants) - 50} more, run ids {job_id}-<index>")
    else:
        print(f"results: {batch.results_location(target.results, spec.name, job_id)}")
    print(f"follow it: cvtrain status {job_id}; cvtrain logs {job_id}"
          f"{':0' if array else ''} --follow")


def status(
    job_ids: list[str] = typer.Argument(None, metavar="JOB_ID",
                                        help="Batch job ids \\[default: the jobs submitted "
                                             "from here, latest 50]."),
    as_json: bool = typer.Option(False, "--json", help="Rows as JSON."),
) -> None:
    """State, attempts, reason and duration of AWS Batch jobs."""
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from cvtrain.cloud import aws, batch

    ids = list(job_ids or [])
    recorded = not ids
    if recorded:
        ids = aws.submitted_ids()
        if not ids:
            print(f"no jobs submitted from here yet ({aws.submitted_file()})")
            return
    jobs = aws.describe_jobs(ids, missing_ok=recorded)
    rows, hints = batch.status_rows(jobs)
    if as_json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return
    console = Console(width=None if sys.stdout.isatty() else 160)
    table = Table(box=None, header_style="bold")
    for col in ("job", "job id", "state", "attempts", "reason", "started (UTC)", "duration"):
        table.add_column(col, overflow="fold")
    colours = {"SUCCEEDED": "green", "FAILED": "red", "RUNNING": "cyan", "RUNNABLE": "yellow"}
    for r in rows:
        state = f"[{colours[r.state]}]{r.state}[/]" if r.state in colours else r.state
        table.add_row(r.job, r.job_id, state, str(r.attempts), r.reason, r.started, r.duration)
    console.print(table)
    for hint in hints:
        console.print(f"[yellow]hint[/]: {hint}", highlight=False)


def logs(
    job_id: str = typer.Argument(..., help="Batch job id (an array child: ID:N)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job "
                                "ends."),
) -> None:
    """Print a Batch job's log (CloudWatch Logs, the latest attempt)."""
    from cvtrain.cloud import aws

    aws.stream_logs(job_id, emit=lambda line: print(line, flush=True), follow=follow)


def cancel(
    job_id: str = typer.Argument(..., help="Batch job id (an array parent cancels all)."),
    reason: str = typer.Option("cancelled with cvtrain cancel", "--reason"),
) -> None:
    """Cancel (terminate) a Batch job, whatever its state."""
    from cvtrain.cloud import aws

    aws.cancel(job_id, reason)
    print(f"cancelled {job_id}")


def run_batch() -> None:
    """Inside a Batch container: run the job in $CVTRAIN_SPEC_B64 (variant
    $AWS_BATCH_JOB_ARRAY_INDEX of $CVTRAIN_SWEEP) into $CVTRAIN_RESULTS, with a run id that
    is the same in every attempt, so a retry resumes from the checkpoint."""
    import yaml

    from cvtrain.cloud import batch
    from cvtrain.errors import UsageError
    from cvtrain.runners import get_runner
    from cvtrain.spec import apply_overrides, validate

    plan = batch.entry_plan(os.environ)
    try:
        doc = yaml.safe_load(plan.spec_yaml)
    except yaml.YAMLError:
        doc = None
    if not isinstance(doc, dict):
        raise UsageError(f"${batch.ENV_SPEC}: expected a YAML job spec")
    spec = validate(apply_overrides(doc, plan.overrides), f"${batch.ENV_SPEC}")
    attempt = os.environ.get(batch.ENV_ATTEMPT)
    print(f"cvtrain run-batch: {spec.name}, run id {plan.run_id}"
          + (f", variant {plan.index}: {' '.join(plan.overrides)}" if plan.index is not None
             else "")
          + (f", attempt {attempt}" if attempt else "")
          + f" -> {batch.results_location(plan.results, spec.name, plan.run_id)}", flush=True)
    code = get_runner("local").run(spec, out=Path(plan.out), run_id=plan.run_id,
                                   results=plan.results)
    if code:
        raise typer.Exit(code)
