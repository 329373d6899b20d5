"""``cvtrain run``: train one job, or a set of jobs one after another, here (or in a
container), and leave a complete run folder for each."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

from cvtrain.cli.jobs import complete_job


class Backend(StrEnum):
    local = "local"
    docker = "docker"


def run(
    jobs: list[str] = typer.Argument(..., metavar="JOB...", autocompletion=complete_job,
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
    backend: Backend = typer.Option(Backend.local, "--backend",
                                    help="local: in this process; docker: in a container of "
                                         "the cvtrain image (same command inside)."),
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
    from cvtrain.errors import UsageError
    from cvtrain.runners import get_runner

    docker_only = {"--image": image, "--gpus": gpus, "--network": network}
    if backend is Backend.local and (given := [k for k, v in docker_only.items() if v]):
        raise UsageError(f"{', '.join(given)}: only with --backend docker")
    if as_json and backend is not Backend.local:
        raise UsageError("--json: only with --backend local (the container's run folder "
                         "paths are not this machine's)")
    files, specs = _load_set(jobs, set_, seed)  # every job checked before any trains
    if len(specs) > 1 and run_id:
        raise UsageError(f"--run-id {run_id}: one run id cannot name the runs of "
                         f"{len(specs)} jobs; leave it out for a set")
    runner = get_runner(backend.value, **({"image": image, "gpus": gpus, "network": network}
                                          if backend is Backend.docker else {}))
    options = dict(out=out, run_id=run_id, results=results, endpoint_url=endpoint_url,
                   **({"force": True} if force else {}))
    if as_json:  # stdout is for the JSON alone: the run's own lines go to stderr
        from rich.console import Console

        from cvtrain.report import RunLog

        options["log"] = RunLog(Console(stderr=True, highlight=False))
    # what resumes an interrupted run, said when it is interrupted (here, not in docker)
    again = dict(seed=seed, out=out, results=results, endpoint_url=endpoint_url)
    reruns = ([rerun_command(jobs[0] if len(specs) == 1 else str(path),
                             _sets_for(set_, spec.data.dataset), **again)
               for path, spec in zip(files, specs, strict=True)]
              if backend is Backend.local else None)
    if backend is Backend.local:  # TensorFlow's threads per op: once, for every job here
        from cvtrain.training.batch_parts import configure_threads

        configure_threads(specs)
    if len(specs) == 1:
        code = runner.run(specs[0], **options, **({"rerun": reruns[0]} if reruns else {}))
        if code:
            raise typer.Exit(code)
        if backend is Backend.local:  # for the docker backend on the host, if it asks
            from cvtrain.runners.result import write_result

            write_result(run_json(runner.last))
        if as_json:
            print(json.dumps(run_json(runner.last), indent=2))
        return
    if backend is Backend.docker:  # no engine or no image: one line, not one per job
        runner.check_engine()
        runner.check_image()
    code = run_set(runner, specs, options, reruns, as_json=as_json)
    if code:
        raise typer.Exit(code)


def run_json(result) -> dict:
    """What ``--json`` prints for a run: its metrics.json and where the run folder is."""
    return {**result.metrics, "run_folder": str(result.run.path)}


def rerun_command(ref: str, sets: list[str], seed: int | None, out: Path | None,
                  results: str | None, endpoint_url: str | None) -> str:
    """``cvtrain run REF`` with the options that make its spec and place (not the run id,
    which the caller adds), quoted for a shell."""
    import shlex

    args = ["cvtrain", "run", ref]
    for text in sets:
        args += ["--set", text]
    for option, value in (("--seed", seed), ("--out", out), ("--results", results),
                          ("--endpoint-url", endpoint_url)):
        if value is not None:
            args += [option, str(value)]
    return shlex.join(args)


def _sets_for(sets: list[str], dataset: str) -> list[str]:
    """The ``--set`` texts that apply to a job of ``dataset``, as given."""
    kept = []
    for text in sets:
        name, colon, key = text.partition("=")[0].partition(":")
        if not (colon and "." in key and "." not in name) or name == dataset:
            kept.append(text)
    return kept


def load_set(refs: list[str], sets: list[str], seed: int | None) -> list:
    """The specs of every job named (a folder: each job file under it, each right after the
    job it extends: :func:`cvtrain.spec.catalog.in_steps_order`), each
    with the ``--set`` values that apply to it: plain ones to all, ``DATASET:KEY=VALUE``
    to the jobs of that dataset. A qualified value no job can take is refused."""
    return _load_set(refs, sets, seed)[1]


def _load_set(refs: list[str], sets: list[str], seed: int | None) -> tuple[list[Path], list]:
    """:func:`load_set`, with the job file of each spec."""
    from cvtrain.errors import UsageError
    from cvtrain.spec import load_spec
    from cvtrain.spec.catalog import find_job, in_steps_order, job_files

    files: list[Path] = []
    for ref in refs:  # a folder's jobs as the steps build on each other (as jobs list shows)
        found = in_steps_order(job_files(Path(ref))) if Path(ref).is_dir() else [find_job(ref)]
        files += [f for f in found if f not in files]
    qualified: dict[str, list[str]] = {}
    plain = []
    for text in sets:
        head, _, rest = text.partition("=")
        dataset, colon, key = head.partition(":")
        if colon and "." in key and "." not in dataset:
            qualified.setdefault(dataset, []).append(f"{key}={rest}")
        else:
            plain.append(text)
    specs = []
    for path in files:
        spec = load_spec(path, plain, seed=seed)
        if qualified.get(spec.data.dataset):
            spec = load_spec(path, plain + qualified[spec.data.dataset], seed=seed)
        specs.append(spec)
    unused = sorted(set(qualified) - {s.data.dataset for s in specs})
    if unused:
        raise UsageError(f"--set {unused[0]}:{qualified[unused[0]][0]}: no job of this run "
                         f"reads dataset {unused[0]}; expected one of "
                         f"{', '.join(sorted({s.data.dataset for s in specs}))}")
    return files, specs


def run_set(runner, specs: list, options: dict, reruns: list[str] | None = None,
            as_json: bool = False) -> int:
    """Each job in turn: a line as it starts and as it ends; a failure is reported and the
    rest go on (a stop request or Ctrl-C ends the set); a table at the end. The exit code
    of the first failure, else 0. ``reruns``: each job's command, for the line of an
    interrupted run. With ``as_json`` the lines and the table go to stderr and a JSON list
    (job, status, run: metrics or null) to stdout."""
    import logging
    import sys
    import time

    from rich.console import Console
    from rich.table import Table

    from cvtrain import stop
    from cvtrain.errors import CvtrainError
    from cvtrain.output import print_table
    from cvtrain.training import RunInterrupted, RunTerminated

    # several models in one process: TensorFlow's python logger warns about retracing
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    say = sys.stderr if as_json else sys.stdout
    t0 = time.perf_counter()
    done: list[tuple[str, str, dict | None, str]] = []
    results: list[dict] = []
    first_code = 0
    for i, spec in enumerate(specs, 1):
        print(f"== [{i}/{len(specs)}] {spec.name} ({time.perf_counter() - t0:.0f} s into the "
              "set)", file=say, flush=True)
        metrics, status = None, "done"
        try:
            code = runner.run(spec, **options,
                              **({"rerun": reruns[i - 1]} if reruns else {}))
            result = getattr(runner, "last", None)
            metrics = result.metrics if result is not None else None
            if as_json and code == 0 and result is not None:
                metrics = run_json(result)
            status = ("done" if code == 0 else f"stopped (exit {code})" if stop.requested()
                      else f"failed (exit {code})")
            first_code = first_code or code
        except (RunTerminated, RunInterrupted):
            raise
        except CvtrainError as exc:
            status = f"failed: {exc}"
            first_code = first_code or exc.exit_code
        print(f"== {spec.name}: {status}", file=say, flush=True)
        done.append((spec.name, status, metrics, ""))
        results.append({"job": spec.name, "status": status, "run": metrics})
        if stop.requested() and i < len(specs):  # a container stopped by SIGTERM: so is the set
            left = len(specs) - i
            print(f"cvtrain: stopped by {stop.signal_name()}: {left} job{'s' * (left > 1)} of "
                  "the set not started", file=sys.stderr, flush=True)
            break
    table = Table(title=f"{len(specs)} jobs in {time.perf_counter() - t0:.0f} s",
                  title_justify="left")
    for col in ("job", "status", "accuracy", "report", "run id"):
        table.add_column(col, no_wrap=col in ("job", "run id"))
    for name, status, m, _ in done:
        m = m or {}
        acc, rep = m.get("test_accuracy"), (m.get("report") or {}).get("test_accuracy")
        table.add_row(name, status if status == "done" else f"[red]{status}[/]",
                      "-" if acc is None else f"{acc:.4f}", "-" if rep is None else f"{rep:.4f}",
                      m.get("run_id", "-"))
    print_table(table, Console(stderr=as_json, highlight=False))
    if as_json:
        print(json.dumps(results, indent=2))
    failed = sum(status != "done" for _, status, _, _ in done)
    if failed:
        print(f"cvtrain: {failed} of {len(specs)} jobs failed", file=sys.stderr)
    return first_code
