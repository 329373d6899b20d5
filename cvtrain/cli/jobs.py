"""``cvtrain jobs``: list, show, validate job files and print their schema."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

app = typer.Typer(help="List, show and validate job files.", no_args_is_help=True)


def complete_job(incomplete: str) -> list[str]:
    """Shell completion of a JOB argument: job names under the jobs folder."""
    from cvtrain.spec.catalog import complete_job

    return complete_job(incomplete)


@app.command("list")
def list_jobs(
    folder: Path = typer.Argument(None, help="Jobs folder \\[default: ./jobs or "
                                             "$CVTRAIN_JOBS]."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list (for scripts)."),
) -> None:
    """A table of the jobs, in the order the experiments build on each other: name,
    dataset, model, epochs, the report's accuracy and loss."""
    import json
    import sys

    from cvtrain.console import fmt_num, print_table
    from cvtrain.paths import jobs_dir
    from cvtrain.spec import SpecError, load_spec
    from cvtrain.spec.catalog import in_steps_order, job_files, jobs_hint

    root = folder or jobs_dir()
    rows = []
    for path in in_steps_order(job_files(folder)):
        try:
            spec = load_spec(path)
        except SpecError as exc:
            print(f"cvtrain: error: {exc}", file=sys.stderr)
            rows.append({"job": path.stem, "path": str(path), "error": str(exc)})
            continue
        rows.append({"job": spec.name, "path": str(path), "dataset": spec.data.dataset,
                     "model": spec.model.name, "epochs": spec.training.epochs,
                     "early_stopping": bool(spec.training.early_stopping),
                     "report_accuracy": spec.report.test_accuracy,
                     "report_loss": spec.report.test_loss, "description": spec.description})
    if as_json:
        print(json.dumps(rows, indent=2))
    elif rows:
        table = Table(title=f"jobs in {root}", title_justify="left")
        for col in ("job", "dataset", "model", "epochs", "report acc", "report loss"):
            table.add_column(col, justify="right" if col.startswith(("epochs", "report"))
                             else "left", no_wrap=col in ("job", "dataset", "model"))
        for r in rows:
            if "error" in r:
                table.add_row(r["job"], "[red]invalid[/]", "", "", "", "")
                continue
            epochs = f"≤{r['epochs']}" if r["early_stopping"] else str(r["epochs"])
            table.add_row(r["job"], r["dataset"], r["model"], epochs,
                          fmt_num(r["report_accuracy"]), fmt_num(r["report_loss"]))
        print_table(table)
    if not rows:
        print(f"cvtrain: no job files in {root}"
              + ("" if folder else f"; {jobs_hint()}"), file=sys.stderr)
    if any("error" in r for r in rows):
        raise typer.Exit(2)


@app.command("show")
def show(
    job: str = typer.Argument(..., help="Job file or name.", autocompletion=complete_job),
    set_: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="Override a value."),
) -> None:
    """Print the fully resolved spec (extends and overrides applied) as YAML."""
    from cvtrain.spec import load_spec
    from cvtrain.spec.catalog import find_job

    print(load_spec(find_job(job), set_).to_yaml(), end="")


@app.command("validate")
def validate(
    paths: list[Path] = typer.Argument(None, help="Files or folders \\[default: the jobs "
                                                  "folder]."),
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
