"""``cvtrain run``: train one job here and leave a complete run folder."""

from __future__ import annotations

from pathlib import Path

import typer


def run(
    job: str = typer.Argument(..., help="Job file, or a job name under the jobs folder."),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE",
                                   help="Override a spec value, e.g. training.epochs=2 "
                                        "(repeatable; values are YAML)."),
    out: Path = typer.Option(None, "--out", help="Results folder [default: ./runs or "
                                                 "$CVTRAIN_RUNS]."),
    run_id: str = typer.Option(None, "--run-id", help="Run id [default: UTC time + random]."),
    seed: int = typer.Option(None, "--seed", help="Seed; makes a CPU run repeatable."),
) -> None:
    """Train and evaluate JOB; write <out>/<job>/<run-id>/ with metrics, curves and model."""
    from cvtrain.catalog import find_job
    from cvtrain.spec import load_spec

    spec = load_spec(find_job(job), set_, seed=seed)
    from cvtrain.train import run_job

    run_job(spec, out=out, run_id=run_id)
