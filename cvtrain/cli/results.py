"""``cvtrain results``: list, show, fetch and compare runs in a local folder or a bucket."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from cvtrain.console import print_table

app = typer.Typer(help="Runs in a results root (a local folder or s3://bucket/prefix): "
                       "list, show, fetch, compare, report.", no_args_is_help=True)

ENDPOINT_HELP = ("S3-compatible endpoint \\[default: boto3's configuration, e.g. "
                 "$AWS_ENDPOINT_URL_S3 / $AWS_ENDPOINT_URL].")
ROOT_HELP = "Results root for <job>/<run-id> arguments \\[default: ./runs or $CVTRAIN_RUNS]."
RUN_HELP = "A run: <root>/<job>/<run-id> (folder or s3 URI), or <job>/<run-id> under --root."


def _when(iso: str | None) -> str:
    if not iso:
        return "-"
    return iso.replace("T", " ")[:16]


def _complete(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[yellow]no[/]"


@app.command("ls")
def ls(
    root: str = typer.Argument(None, help="Local folder or s3://bucket/prefix "
                                          "\\[default: ./runs or $CVTRAIN_RUNS]."),
    job: str = typer.Option(None, "--job", help="Only this job's runs."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list (for scripts)."),
    endpoint_url: str = typer.Option(None, "--endpoint-url", help=ENDPOINT_HELP),
) -> None:
    """A table of the runs: accuracy and loss beside the report's, epochs, time, complete."""
    from cvtrain.console import fmt_diff, fmt_num, fmt_seconds
    from cvtrain.results import default_root, list_runs
    from cvtrain.runs import SYNTHETIC_NOTE

    root = root or default_root()
    rows = list_runs(root, job=job, endpoint_url=endpoint_url)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"runs in {root}", title_justify="left")
    for col in ("job", "run id", "when", "accuracy", "loss", "report acc", "difference",
                "epochs", "wall time", "complete"):
        table.add_column(col, justify="left" if col in ("job", "run id", "when") else "right",
                         no_wrap=col in ("job", "run id", "when"))
    for r in rows:
        epochs = "-" if r["epochs_run"] is None else str(r["epochs_run"])
        diff = ("[yellow]synthetic[/]" if r["synthetic"] else
                fmt_diff(r["test_accuracy"], r["report_accuracy"]))
        table.add_row(r["job"], r["run_id"], _when(r["started"]), fmt_num(r["test_accuracy"]),
                      fmt_num(r["test_loss"]), fmt_num(r["report_accuracy"]), diff, epochs,
                      fmt_seconds(r["wall_seconds"]), _complete(r["complete"]))
    print_table(table)
    if any(r["synthetic"] for r in rows):
        print(f"runs marked synthetic: {SYNTHETIC_NOTE}")
    if not rows:
        print("no runs", file=sys.stderr)


@app.command("show")
def show(
    run: str = typer.Argument(..., metavar="RUN", help=RUN_HELP),
    root: str = typer.Option(None, "--root", help=ROOT_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the run (location, complete, "
                                 "metrics.json, files) as JSON (for scripts)."),
    endpoint_url: str = typer.Option(None, "--endpoint-url", help=ENDPOINT_HELP),
) -> None:
    """The run's metrics beside the report's, and its files with their sizes."""
    from cvtrain.console import fmt_diff, fmt_num, fmt_seconds
    from cvtrain.results import resolve_run, run_files, run_metrics
    from cvtrain.runs import MANIFEST, SYNTHETIC_NOTE, is_synthetic
    from cvtrain.storage import human_bytes

    ref = resolve_run(run, root)
    files = run_files(ref, endpoint_url)
    metrics = run_metrics(ref, endpoint_url)
    complete, m = any(rel == MANIFEST for rel, _ in files), metrics or {}
    if as_json:
        print(json.dumps({"run": ref.label, "location": ref.location,
                          "complete": complete, "metrics": metrics,
                          "files": [{"path": rel, "size": size} for rel, size in files]},
                         indent=2))
        return
    report = m.get("report") or {}
    synthetic = is_synthetic(m)
    print(f"{ref.label}  ({ref.location})" + (" (synthetic data)" if synthetic else ""))
    table = Table(caption=SYNTHETIC_NOTE if synthetic else None, caption_justify="left")
    table.add_column("")
    table.add_column("ours", justify="right")
    table.add_column("report", justify="right")
    table.add_column("difference", justify="right")
    for key, label in (("test_accuracy", "test accuracy"), ("test_loss", "test loss")):
        table.add_row(label, fmt_num(m.get(key)), fmt_num(report.get(key)),
                      "n/a" if synthetic else fmt_diff(m.get(key), report.get(key)))
    if m.get("epochs_run") is not None:
        table.add_row("epochs", f"{m['epochs_run']} (best {m.get('best_epoch')})", "", "")
    table.add_row("wall time", fmt_seconds(m.get("wall_seconds")), "", "")
    table.add_row("started", _when(m.get("started")), "", "")
    table.add_row("complete", _complete(complete), "", "")
    if not m:
        table.add_row("metrics.json", "[yellow]missing or unreadable[/]", "", "")
    print_table(table)
    listing = Table(title="files", title_justify="left")
    listing.add_column("path", no_wrap=True)
    listing.add_column("size", justify="right")
    for rel, size in files:
        listing.add_row(rel, human_bytes(size))
    print_table(listing)


@app.command("fetch")
def fetch(
    run: str = typer.Argument(..., metavar="RUN", help=RUN_HELP),
    dest: Path = typer.Argument(..., help="Local results root: the run lands in "
                                          "DEST/<job>/<run-id>/."),
    root: str = typer.Option(None, "--root", help=ROOT_HELP),
    endpoint_url: str = typer.Option(None, "--endpoint-url", help=ENDPOINT_HELP),
) -> None:
    """Download a run folder and check every file against its manifest's sha256."""
    from cvtrain.results import fetch_run, resolve_run

    local, stats = fetch_run(resolve_run(run, root), dest, endpoint_url=endpoint_url,
                             progress=sys.stderr.isatty())
    print(f"{local.path}: {stats.summary()}")
    if local.is_complete():
        print(f"{local.path}: every file matches manifest.json")
    else:
        print(f"cvtrain: warning: {local.path}: incomplete run (no manifest.json); "
              "files not verified", file=sys.stderr)


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


@app.command("compare")
def compare(
    runs_: list[str] = typer.Argument(..., metavar="RUN", help=RUN_HELP),
    root: str = typer.Option(None, "--root", help=ROOT_HELP),
    plot: Path = typer.Option(None, "--plot",
                              help="Also write a PNG with every run's loss and accuracy "
                                   "curves overlaid \\[default: no plot]."),
    as_json: bool = typer.Option(False, "--json", help="Print the runs' metrics, the spec "
                                 "values that differ and the plot's path as JSON."),
    endpoint_url: str = typer.Option(None, "--endpoint-url", help=ENDPOINT_HELP),
) -> None:
    """Metrics side by side, the spec values that differ, and the curves in one plot."""
    from cvtrain.console import fmt_num, fmt_seconds
    from cvtrain.errors import UsageError
    from cvtrain.results import compare_runs, resolve_run

    if len(runs_) < 2:
        raise UsageError("compare: expected at least two runs")
    refs = [resolve_run(r, root) for r in runs_]
    result = compare_runs(refs, plot=plot, endpoint_url=endpoint_url)
    if as_json:
        print(json.dumps({"runs": [{"run": ref.label, "location": ref.location, "metrics": m}
                                   for ref, m in zip(refs, result.metrics, strict=True)],
                          "spec_diff": result.spec_diff,
                          "plot": None if result.plot is None else str(result.plot)},
                         indent=2, default=str))
        return
    # run ids are names: never broken inside a header (the job goes to the title when
    # every run is of one job, which keeps the headers short; a table too wide prints plain)
    one_job = len({ref.job for ref in refs}) == 1
    headers = [ref.run_id if one_job else ref.label for ref in refs]
    of = f" of {refs[0].job}" if one_job else ""
    table = Table(title=f"metrics{of}", title_justify="left")
    table.add_column("", no_wrap=True)
    for header in headers:
        table.add_column(header, justify="right", no_wrap=True)
    ms = [m or {} for m in result.metrics]
    rows = [
        ("test accuracy", [fmt_num(m.get("test_accuracy")) for m in ms]),
        ("test loss", [fmt_num(m.get("test_loss")) for m in ms]),
        ("report accuracy", [fmt_num((m.get("report") or {}).get("test_accuracy")) for m in ms]),
        ("report loss", [fmt_num((m.get("report") or {}).get("test_loss")) for m in ms]),
        ("epochs (best)", [f"{m.get('epochs_run', '-')} ({m.get('best_epoch', '-')})"
                           for m in ms]),
        ("wall time", [fmt_seconds(m.get("wall_seconds")) for m in ms]),
        ("parameters", ["-" if m.get("parameters") is None else f"{m['parameters']:,}"
                        for m in ms]),
    ]
    for label, values in rows:
        table.add_row(label, *values)
    print_table(table)
    if result.spec_diff:
        diff = Table(title=f"spec differences{of}", title_justify="left")
        diff.add_column("key", no_wrap=True)
        for header in headers:
            diff.add_column(header, no_wrap=True)
        for key, values in result.spec_diff.items():
            diff.add_row(key, *(_fmt(v) for v in values))
        print_table(diff)
    else:
        print("specs: identical")
    if result.plot is not None:
        print(f"curves: {result.plot}")


@app.command("report")
def report(
    root: str = typer.Argument(None, help="Local folder or s3://bucket/prefix "
                                          "\\[default: ./runs or $CVTRAIN_RUNS]."),
    out: Path = typer.Option(Path("report"), "--out", help="Folder for report.md, "
                             "report.json, accuracy.png and curves.png."),
    jobs: Path = typer.Option(None, "--jobs", help="Job files or folder whose experiments "
                              "the table lists \\[default: the jobs folder]."),
    as_json: bool = typer.Option(False, "--json", help="Print report.json instead of the "
                                 "table."),
    endpoint_url: str = typer.Option(None, "--endpoint-url", help=ENDPOINT_HELP),
) -> None:
    """The coursework's table with ours beside it: the latest complete run of every job."""
    from cvtrain import coursework_report
    from cvtrain.console import fmt_diff, fmt_num, fmt_seconds
    from cvtrain.results import default_root

    built = coursework_report.build(root or default_root(), jobs, endpoint_url)
    written = coursework_report.write(built, out, endpoint_url)
    if as_json:
        print(json.dumps(built, indent=2))
        return
    table = Table(title=f"cvtrain beside the report ({built['root']})", title_justify="left")
    for col in ("experiment", "report acc", "ours", "difference", "epochs", "time", "run id"):
        table.add_column(col, justify="left" if col in ("experiment", "run id") else "right",
                         no_wrap=col in ("experiment", "run id"))
    for r in built["rows"]:
        if r["status"] == "missing":
            table.add_row(r["job"], fmt_num(r["report_accuracy"]), "[yellow]missing[/]", "",
                          "", "", "")
            continue
        table.add_row(r["job"], fmt_num(r["report_accuracy"]), fmt_num(r["test_accuracy"]),
                      "[yellow]synthetic[/]" if r.get("synthetic") else
                      fmt_diff(r["test_accuracy"], r["report_accuracy"]),
                      "-" if r["epochs_run"] is None else str(r["epochs_run"]),
                      fmt_seconds(r["wall_seconds"]), r["run_id"])
    print_table(table)
    if any(r.get("synthetic") for r in built["rows"]):
        from cvtrain.runs import SYNTHETIC_NOTE

        print(f"runs marked synthetic: {SYNTHETIC_NOTE}")
    print("wrote " + ", ".join(str(p) for p in written))
