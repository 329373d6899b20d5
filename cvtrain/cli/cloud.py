"""``cvtrain submit / status / logs / cancel``: jobs on AWS Batch; ``run-batch`` (hidden) is
what a Batch container runs. Parsing options and printing only: the work is
:class:`cvtrain.cloud.batch.BatchRunner`'s (boto3 is imported inside its AWS calls)."""

from __future__ import annotations

import json

import typer

from cvtrain.cli.jobs import complete_job


def submit(
    jobs: list[str] = typer.Argument(None, autocompletion=complete_job, metavar="JOB",
                                     help="Job files, job names under the jobs folder, or "
                                          "folders of jobs; several make one array job, a "
                                          "child per job (not with --resume)."),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE",
                                   help="Override a spec value (repeatable; values are "
                                        "YAML); DATASET:KEY=VALUE for one dataset's jobs."),
    sweep: list[str] = typer.Option([], "--sweep", metavar="KEY=V1,V2,...",
                                    help="Run one job per value (repeatable: every "
                                         "combination); becomes one array job."),
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
    resume: str = typer.Option(None, "--resume", metavar="JOB_ID",
                               help="Continue the run of an earlier job (ID, or PARENT:N for "
                                    "an array child) that timed out, failed or was cancelled, "
                                    "from its checkpoint in the bucket: same spec, results "
                                    "and run id; the other options apply to the new job."),
    as_json: bool = typer.Option(False, "--json", help="Print the submission (job id, name, "
                                 "definition, image, each run's id and results location) "
                                 "as JSON (for scripts)."),
) -> None:
    """Submit JOB (a sweep of it, or a set of jobs) to GPU instances on AWS Batch; print ids
    and results."""
    from cvtrain.cloud.batch import BatchRunner
    from cvtrain.errors import UsageError
    from cvtrain.sets import load_set

    runner = BatchRunner()
    options = dict(queue=queue, image=image, results=results, spot=spot, stack=stack,
                   gpus=gpus, vcpus=vcpus, memory_mib=memory, attempts=attempts,
                   timeout_seconds=int(timeout_hours * 3600))
    if resume:
        if jobs or set_ or sweep or seed is not None:
            raise UsageError(f"--resume {resume}: give no JOB, --set, --sweep or --seed; the "
                             "run continues with the spec it was started with")
        plan = runner.plan_resume(resume, **options)
    elif not jobs:
        raise UsageError("submit: expected JOB (a job file, name or folder), or --resume "
                         "JOB_ID")
    else:
        specs = [spec for _, spec in load_set(jobs, set_, seed)]  # all checked before AWS
        if len(specs) > 1 and sweep:
            raise UsageError(f"--sweep: one job at a time; {len(specs)} jobs were given")
        plan = (runner.plan_set(specs, **options) if len(specs) > 1
                else runner.plan(specs[0], sweep, **options))
    if dry_run:
        print(json.dumps(plan.to_json(), indent=2))
        return
    done = runner.submit(plan, check=check)
    if as_json:
        print(json.dumps(submission_json(done, plan), indent=2))
        return
    for line in done.checks:
        print(f"ok  {line}")
    print(f"{'registered' if done.registered else 'reusing'} job definition "
          f"{done.definition_arn}")
    print(f"image: {done.image}")
    if done.jobs:  # a set split for shared features: several Batch jobs
        _print_parts(done)
        return
    print(f"submitted {done.job_name}: {done.job_id}"
          + (f" (array of {len(done.children)}{' jobs' if plan.is_set else ''})"
             if done.array else ""))
    if done.array:
        for child in done.children[:50]:
            what = child.run.job if plan.is_set else " ".join(child.overrides)
            print(f"  {done.job_id}:{child.index}  {what}  -> {child.run.location}/")
        if len(done.children) > 50:
            print(f"  ... and {len(done.children) - 50} more, run ids {done.job_id}-<index>")
    else:
        print(f"results: {done.children[0].run.location}/"
              + (f" (continues run {plan.resumes})" if plan.resumes else ""))
    print(f"follow it: cvtrain status {done.job_id}; cvtrain logs {done.job_id}"
          f"{':0' if done.array else ''} --follow")


def _print_parts(done) -> None:
    """A split set: each Batch job (what it runs, what it waits for), then each run."""
    for job in done.jobs:
        if job.role == "features":
            what = f"backbone features for {', '.join(job.jobs)}"
        else:
            what = f"array of {job.size} jobs" if job.size else job.jobs[0]
        print(f"submitted {job.job_name}: {job.job_id} ({what}"
              + (f"; starts after {job.after}" if job.after else "") + ")")
    for child in done.children[:50]:
        print(f"  {done.child_id(child)}  {child.run.job}  -> {child.run.location}/")
    if len(done.children) > 50:
        print(f"  ... and {len(done.children) - 50} more")
    ids = " ".join(job.job_id for job in done.jobs)
    print(f"follow them: cvtrain status {ids}; cvtrain logs {done.child_id(done.children[0])} "
          "--follow")


def submission_json(done, plan) -> dict:
    """What ``submit --json`` prints: the ids a script needs, no prose to scrape. A split
    set (shared features) also lists its Batch jobs (``jobs``: role, id, name, size,
    the id it waits for, the set's jobs it runs)."""
    doc = {"job_id": done.job_id, "job_name": done.job_name, "array": done.array,
           "job_definition": done.definition_arn, "registered": done.registered,
           "image": done.image, "checks": list(done.checks), "resumes": plan.resumes,
           "runs": [{"job_id": done.child_id(child), "index": child.index,
                     "job": child.run.job, "overrides": list(child.overrides),
                     "run_id": child.run.run_id, "results": f"{child.run.location}/"}
                    for child in done.children]}
    if done.jobs:
        doc["jobs"] = [{"role": j.role, "job_id": j.job_id, "job_name": j.job_name,
                        "size": j.size, "after": j.after, "jobs": list(j.jobs)}
                       for j in done.jobs]
    return doc


def status(
    job_ids: list[str] = typer.Argument(None, metavar="JOB_ID",
                                        help="Batch job ids \\[default: the jobs submitted "
                                             "from here, latest 50]."),
    as_json: bool = typer.Option(False, "--json", help="Rows as JSON."),
) -> None:
    """State, attempts, reason, duration and image of AWS Batch jobs."""
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from cvtrain.cloud.batch import BatchRunner
    from cvtrain.cloud.status import short_image
    from cvtrain.console import print_table

    report = BatchRunner().status(job_ids or [])
    if report.nothing_recorded:
        print(f"no jobs submitted from here yet ({report.record})")
        return
    if as_json:
        print(json.dumps([asdict(r) for r in report.rows], indent=2))
        return
    console = Console(highlight=False)
    table = Table(box=None, header_style="bold")
    for col in ("job", "job id", "state", "attempts", "reason", "started (UTC)", "duration",
                "image"):
        # names, ids and images whole (they are copied and grepped); the reason wraps
        table.add_column(col, no_wrap=col in ("job", "job id", "state", "started (UTC)",
                                              "image"))
    colours = {"SUCCEEDED": "green", "FAILED": "red", "RUNNING": "cyan", "RUNNABLE": "yellow"}
    for r in report.rows:
        state = f"[{colours[r.state]}]{r.state}[/]" if r.state in colours else r.state
        table.add_row(r.job, r.job_id, state, str(r.attempts), r.reason, r.started, r.duration,
                      short_image(r.image))
    print_table(table, console)
    for hint in report.hints:
        console.print(f"[yellow]hint[/]: {hint}", soft_wrap=True)


def logs(
    job_id: str = typer.Argument(..., help="Batch job id (an array child: ID:N)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job "
                                "ends, going on to each retried attempt's own log."),
) -> None:
    """Print a Batch job's log (CloudWatch Logs, the latest attempt)."""
    from cvtrain.cloud.batch import BatchRunner

    for line in BatchRunner().logs(job_id, follow=follow):
        print(line, flush=True)


def cancel(
    job_id: str = typer.Argument(..., help="Batch job id (an array parent cancels all)."),
    reason: str = typer.Option("cancelled with cvtrain cancel", "--reason"),
) -> None:
    """Cancel (terminate) a Batch job, whatever its state."""
    from cvtrain.cloud.batch import BatchRunner

    BatchRunner().cancel(job_id, reason)
    print(f"cancelled {job_id}")


def run_batch() -> None:
    """Inside a Batch container: run the job in $CVTRAIN_SPEC_B64 (variant
    $AWS_BATCH_JOB_ARRAY_INDEX of $CVTRAIN_SWEEP) into $CVTRAIN_RESULTS, with a run id that
    is the same in every attempt, so a retry resumes from the checkpoint."""
    from cvtrain.cloud.batch import BatchRunner

    runner = BatchRunner()
    entry = runner.entry()
    plan = entry.plan
    if plan.task:  # a features job: no run, the backbone's features shared in the results
        _features_batch(runner, entry)
        return
    print(f"cvtrain run-batch: {entry.spec.name}, run id {plan.run_id}"
          + (f", variant {plan.index}: {' '.join(plan.overrides)}" if plan.index is not None
             else "")
          + (f", attempt {plan.attempt}" if plan.attempt else "")
          + f" -> {entry.run.location}/", flush=True)
    result = runner.run_entry(entry)
    if result.code:
        raise typer.Exit(result.code)


def _features_batch(runner, entry) -> None:
    """A features job: what it found or extracted, and where it is shared."""
    from cvtrain.console import RunLog
    from cvtrain.data.birds.shared import SHARED_FOLDER

    where = f"{entry.plan.results}/{SHARED_FOLDER}/"
    print(f"cvtrain run-batch: backbone features for {entry.spec.name}"
          + (f", attempt {entry.plan.attempt}" if entry.plan.attempt else "")
          + f" -> {where}", flush=True)
    got = runner.run_features(entry, log=RunLog())
    if got.get("shared"):
        print(f"cvtrain run-batch: features {got.get('key')} "
              f"{'extracted and ' if got.get('cache') == 'miss' else ''}"
              f"shared: {got['shared']}", flush=True)
    else:  # extracted, not shared: the heads find nothing and extract their own
        print(f"cvtrain run-batch: features {got.get('key')} not shared; each head job "
              "extracts its own", flush=True)
