"""``cvtrain run``: train one job, or a set of jobs one after another, here (or in a
container), and leave a complete run folder for each."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path

import typer

from cvtrain.cli.jobs import complete_job


class RunnerName(StrEnum):
    local = "local"
    docker = "docker"


def run(
    jobs: list[str] = typer.Argument(..., metavar="JOB", autocompletion=complete_job,
                                     help="Job files, job names under the jobs folder, or "
                                          "folders of job files (a set: run one after "
                                          "another)."),
    set_: list[str] = typer.Option([], "--set", metavar="[DATASET:]KEY=VALUE",
                                   help="Override a spec value, e.g. training.epochs=2 "
                                        "(repeatable; values are YAML); cub200:data.path=... "
                                        "applies to the jobs of that dataset only."),
    out: Path = typer.Option(None, "--out", help="Results folder \\[default: ./runs or "
                                                 "$CVTRAIN_RUNS]."),
    run_id: str = typer.Option(None, "--run-id", help="Run id \\[default: UTC time + random]."),
    seed: int = typer.Option(None, "--seed", help="Seed; makes a CPU run repeatable."),
    results: str = typer.Option(None, "--results", metavar="URI",
                                help="Also mirror the run folder to this folder or s3://bucket/"
                                     "prefix as it is written (manifest.json last). An "
                                     "incomplete run with the same --run-id there is resumed."),
    endpoint_url: str = typer.Option(None, "--endpoint-url",
                                     help="S3-compatible endpoint \\[default: boto3's "
                                          "configuration, e.g. $AWS_ENDPOINT_URL]."),
    runner_name: RunnerName = typer.Option(RunnerName.local, "--runner",
                                           help="local: in this process; docker: in a "
                                                "container of the cvtrain image (same command "
                                                "inside)."),
    backend: RunnerName = typer.Option(None, "--backend", hidden=True,
                                       help="Deprecated name of --runner."),
    image: str = typer.Option(None, "--image", help="docker: the image \\[default: "
                                                    "$CVTRAIN_IMAGE or cvtrain:latest]."),
    gpus: str = typer.Option(None, "--gpus", metavar="all|N|none",
                             help="docker: GPUs for the container: all, the first N, device "
                                  "indices such as 0,2, or none \\[default: all]."),
    network: str = typer.Option(None, "--network",
                                help="docker: the container's network \\[default: host]."),
    force: bool = typer.Option(False, "--force", help="Train even when a complete seeded run "
                               "with the same fingerprint is in --out (it is reused "
                               "otherwise)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics (metrics.json and "
                                 "the run folder; a list for a set) as JSON on stdout at the "
                                 "end; everything else goes to stderr."),
) -> None:
    """Train and evaluate JOB (or each job of a set, in order); write
    <out>/<job>/<run-id>/ with metrics, curves and model for each."""
    import sys

    from cvtrain.errors import UsageError
    from cvtrain.runners import get_runner
    from cvtrain.runners.result import write_result
    from cvtrain.sets import load_set, rerun_command, run_set, sets_for

    if backend is not None:
        print("cvtrain: --backend is deprecated and will be removed in the next release; "
              f"use --runner {backend.value}", file=sys.stderr)
        runner_name = backend
    local = runner_name is RunnerName.local
    docker_only = {"--image": image, "--gpus": gpus, "--network": network}
    if local and (given := [k for k, v in docker_only.items() if v]):
        raise UsageError(f"{', '.join(given)}: only with --runner docker")
    if as_json and not local:
        raise UsageError("--json: only with --runner local (the container's run folder "
                         "paths are not this machine's)")
    jobs_ = load_set(jobs, set_, seed)  # every job checked before any trains
    specs = [spec for _, spec in jobs_]
    if len(specs) > 1 and run_id:
        raise UsageError(f"--run-id {run_id}: one run id cannot name the runs of "
                         f"{len(specs)} jobs; leave it out for a set")
    runner = get_runner(runner_name.value, **({} if local else
                                               {"image": image, "gpus": gpus,
                                                "network": network}))
    options = dict(out=out, run_id=run_id, results=results, endpoint_url=endpoint_url,
                   **({"force": True} if force else {}))
    if as_json:  # stdout is for the JSON alone: the run's own lines go to stderr
        from rich.console import Console

        from cvtrain.console import RunLog

        options["log"] = RunLog(Console(stderr=True, highlight=False))
    # what resumes an interrupted run, said when it is interrupted (here, not in docker)
    again = dict(seed=seed, out=out, results=results, endpoint_url=endpoint_url)
    reruns = ([rerun_command(jobs[0] if len(specs) == 1 else str(path),
                             sets_for(set_, spec.data.dataset), **again)
               for path, spec in jobs_] if local else None)
    if local:  # TensorFlow's threads per op: once, for every job of this process
        from cvtrain.training.batch_parts import configure_threads

        configure_threads(specs)
    if len(specs) == 1:
        result = runner.run(specs[0], **options, **({"rerun": reruns[0]} if reruns else {}))
        if result.code:
            raise typer.Exit(result.code)
        if local:  # for the docker runner on the host, if it asks
            write_result(result)
        if as_json:
            print(json.dumps(result.to_json(), indent=2))
        return
    if not local:  # no engine or no image: one line, not one per job
        runner.check_engine()
        runner.check_image()
    say = sys.stderr if as_json else sys.stdout
    t0 = time.perf_counter()
    done = run_set(runner, specs, options, reruns, say=say)
    _set_table(done, len(specs), time.perf_counter() - t0, as_json)
    if as_json:
        print(json.dumps([{"job": spec.name, "status": status,
                           "run": (result.to_json() if result.code == 0 and result.metrics
                                   else result.metrics)}
                          for spec, status, result in done], indent=2))
    failed = sum(status != "done" for _, status, _ in done)
    if failed:
        print(f"cvtrain: {failed} of {len(specs)} jobs failed", file=sys.stderr)
    code = next((result.code for _, _, result in done if result.code), 0)
    if code:
        raise typer.Exit(code)


def _set_table(done: list, jobs: int, seconds: float, stderr: bool) -> None:
    """The set's table: each job's status, accuracy beside the report's, run id."""
    from rich.console import Console
    from rich.table import Table

    from cvtrain.console import print_table

    table = Table(title=f"{jobs} jobs in {seconds:.0f} s", title_justify="left")
    for col in ("job", "status", "accuracy", "report", "run id"):
        table.add_column(col, no_wrap=col in ("job", "run id"))
    for spec, status, result in done:
        m = result.metrics or {}
        acc, rep = m.get("test_accuracy"), (m.get("report") or {}).get("test_accuracy")
        table.add_row(spec.name, status if status == "done" else f"[red]{status}[/]",
                      "-" if acc is None else f"{acc:.4f}", "-" if rep is None else f"{rep:.4f}",
                      m.get("run_id", "-"))
    print_table(table, Console(stderr=stderr, highlight=False))
