"""``cvtrain run``: train one job here (or in a container) and leave a complete run folder."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer


class Backend(StrEnum):
    local = "local"
    docker = "docker"


def run(
    job: str = typer.Argument(..., help="Job file, or a job name under the jobs folder."),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE",
                                   help="Override a spec value, e.g. training.epochs=2 "
                                        "(repeatable; values are YAML)."),
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
) -> None:
    """Train and evaluate JOB; write <out>/<job>/<run-id>/ with metrics, curves and model."""
    from cvtrain.errors import UsageError
    from cvtrain.runners import get_runner
    from cvtrain.spec import load_spec
    from cvtrain.spec.catalog import find_job

    docker_only = {"--image": image, "--gpus": gpus, "--network": network}
    if backend is Backend.local and (given := [k for k, v in docker_only.items() if v]):
        raise UsageError(f"{', '.join(given)}: only with --backend docker")
    spec = load_spec(find_job(job), set_, seed=seed)
    runner = get_runner(backend.value, **({"image": image, "gpus": gpus, "network": network}
                                          if backend is Backend.docker else {}))
    code = runner.run(spec, out=out, run_id=run_id, results=results, endpoint_url=endpoint_url,
                      **({"force": True} if force else {}))
    if code:
        raise typer.Exit(code)
