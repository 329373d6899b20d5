"""``cvtrain jobs``: list, show, validate job files and print their schema."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="List, show and validate job files.", no_args_is_help=True)


@app.command("list")
def list_jobs(
    folder: Path = typer.Argument(None, help="Jobs folder [default: ./jobs or $CVTRAIN_JOBS]."),
) -> None:
    """A table of the jobs: name, dataset, model, epochs, the report's accuracy."""
    from cvtrain.paths import jobs_dir
    from cvtrain.report import fmt_num
    from cvtrain.spec import SpecError, load_spec
    from cvtrain.spec.catalog import job_files

    root = folder or jobs_dir()
    table = Table(title=f"jobs in {root}", title_justify="left")
    for col in ("job", "dataset", "model", "epochs", "report acc", "report loss"):
        table.add_column(col, justify="right" if col.startswith(("epochs", "report")) else "left")
    bad = 0
    for path in job_files(root):
        try:
            spec = load_spec(path)
        except SpecError as exc:
            bad += 1
            table.add_row(path.stem, f"[red]invalid: {exc}[/]", "", "", "", "")
            continue
        epochs = str(spec.training.epochs)
        if spec.training.early_stopping:
            epochs = f"≤{epochs}"
        table.add_row(spec.name, spec.data.dataset, spec.model.name, epochs,
                      fmt_num(spec.report.test_accuracy), fmt_num(spec.report.test_loss))
    Console().print(table)
    if bad:
        raise typer.Exit(2)


@app.command("show")
def show(
    job: str = typer.Argument(..., help="Job file or name."),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="Override a value."),
) -> None:
    """Print the fully resolved spec (extends and overrides applied) as YAML."""
    from cvtrain.spec import load_spec
    from cvtrain.spec.catalog import find_job

    print(load_spec(find_job(job), set_).to_yaml(), end="")


@app.command("validate")
def validate(
    paths: list[Path] = typer.Argument(None, help="Files or folders [default: the jobs folder]."),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE",
                                   help="Override a value in each file before checking it "
                                        "(repeatable)."),
) -> None:
    """Check job files as `cvtrain run` would, touching no data: the schema, and whether the
    model fits the dataset. One line per problem, exit 2 if any."""
    import sys

    from cvtrain.paths import jobs_dir
    from cvtrain.spec import SpecError, load_spec
    from cvtrain.spec.catalog import job_files

    files = [f for p in (paths or [jobs_dir()]) for f in job_files(p)]
    bad = 0
    for path in files:
        try:
            load_spec(path, set_)
        except SpecError as exc:
            bad += 1
            print(f"cvtrain: error: {exc}", file=sys.stderr)
    print(f"{len(files) - bad} of {len(files)} job files valid")
    if bad:
        raise typer.Exit(2)


@app.command("schema")
def schema() -> None:
    """Print the JSON Schema of a job spec."""
    from cvtrain.spec import json_schema

    print(json_schema())
