"""``cvtrain results report``: the coursework's table with our numbers beside it.

For every job file (the jobs folder, or ``--jobs``) it takes the latest complete run of that
job in a results root (local or ``s3://``), and writes ``report.md`` (the table, the
report's notes, provenance per row), ``report.json`` (the same, for scripts),
``accuracy.png`` (ours against the report's, one pair of bars per experiment) and
``curves.png`` (every run's learning curves in one grid). A job without a complete run is
a row marked missing, never left out. matplotlib is imported only when plotting.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from cvtrain import runs
from cvtrain.console import fmt_diff, fmt_num, fmt_seconds
from cvtrain.results import list_runs, read_text
from cvtrain.storage.s3 import join

REPORT_MD, REPORT_JSON = "report.md", "report.json"
ACCURACY_PNG, CURVES_PNG = "accuracy.png", "curves.png"


def _expected_jobs(jobs_root: Path | None) -> list[dict]:
    """(name, the report's numbers and note) of every job file, in the order the
    experiments build on each other (as ``jobs list`` shows them)."""
    from cvtrain.spec import load_spec
    from cvtrain.spec.catalog import in_steps_order, job_files

    jobs = []
    for path in in_steps_order(job_files(jobs_root)):
        spec = load_spec(path)
        report = spec.report
        jobs.append({"job": spec.name, "file": str(path),
                     "report_accuracy": report.test_accuracy if report else None,
                     "report_loss": report.test_loss if report else None,
                     "note": report.note if report else None})
    return jobs


def _device(m: dict) -> str:
    device = m.get("device") or {}
    name = (device.get("gpus") or [None])[0] or device.get("cpu") or device.get("type") or "-"
    replicas = device.get("replicas") or 1
    return f"{name} x{replicas}" if replicas > 1 else name


def build(root: str, jobs_root: Path | None = None, endpoint_url: str | None = None) -> dict:
    """The report's content: one row per job, the latest complete run's numbers (by its
    finishing time) or ``status: missing``."""
    rows = list_runs(root, endpoint_url=endpoint_url)
    latest: dict[str, dict] = {}
    for row in rows:
        if row["complete"] and (row["job"] not in latest
                                or (row["finished"] or "") >= (latest[row["job"]]["finished"]
                                                               or "")):
            latest[row["job"]] = row
    table = []
    for job in _expected_jobs(jobs_root):
        run = latest.get(job["job"])
        entry = {**job, "status": "complete" if run else "missing"}
        if run:
            text = read_text(join(run["location"], runs.METRICS), endpoint_url)
            m = json.loads(text) if text else {}
            acc, loss = m.get("test_accuracy"), m.get("test_loss")
            rep_acc = job["report_accuracy"]
            rep_loss = job["report_loss"]
            synthetic = runs.is_synthetic(m)
            if synthetic:  # not measured on the report's data: no difference to give
                rep_acc = rep_loss = None
            entry.update({
                "run_id": run["run_id"], "location": run["location"],
                "test_accuracy": acc, "test_loss": loss, "synthetic": synthetic,
                "accuracy_difference": None if acc is None or rep_acc is None
                else round(acc - rep_acc, 6),
                "loss_difference": None if loss is None or rep_loss is None
                else round(loss - rep_loss, 6),
                "epochs_run": m.get("epochs_run"), "wall_seconds": m.get("wall_seconds"),
                "finished": m.get("finished"), "device": _device(m),
                "backend": (m.get("device") or {}).get("backend"),
                "cvtrain": (m.get("versions") or {}).get("cvtrain"),
                "git_revision": m.get("git_revision"),
                "dataset_sha256": (m.get("dataset") or {}).get("sha256"),
                "dataset_source": (m.get("dataset") or {}).get("source"),
                "seed": m.get("seed"),
            })
        table.append(entry)
    extra = sorted(set(latest) - {j["job"] for j in table})
    return {"root": root, "rows": table, "other_jobs": extra}


def _diff(value) -> str:
    return fmt_diff(value, 0.0)


def markdown(report: dict) -> str:
    rows = report["rows"]
    done = sum(r["status"] == "complete" for r in rows)
    synthetic = [r["job"] for r in rows if r.get("synthetic")]
    lines = ["# cvtrain beside the coursework report", "",
             f"Results root: `{report['root']}`; {done} of {len(rows)} experiments have a "
             "complete run (the latest one of each is shown).", ""]
    if synthetic:
        lines += [f"**Synthetic data**: {len(synthetic)} of these runs (marked *synthetic*) "
                  "trained on synthetic stand-in data (`cvtrain data synth`, `make demo`). "
                  "Their numbers test the pipeline; they are not results, and no difference "
                  "from the report is given for them.", ""]
    lines += ["| experiment | report accuracy | ours | difference | report loss | ours | "
              "difference | epochs | time | device | run |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "missing":
            lines.append(f"| {r['job']} | {fmt_num(r['report_accuracy'])} | missing | | "
                         f"{fmt_num(r['report_loss'])} | | | | | | |")
            continue
        fake = r.get("synthetic")
        lines.append(
            f"| {r['job']} | {fmt_num(r['report_accuracy'])} | {fmt_num(r['test_accuracy'])} | "
            f"{'*synthetic*' if fake else _diff(r['accuracy_difference'])} | "
            f"{fmt_num(r['report_loss'])} | {fmt_num(r['test_loss'])} | "
            f"{'*synthetic*' if fake else _diff(r['loss_difference'])} | "
            f"{r['epochs_run'] if r['epochs_run'] is not None else '-'} | "
            f"{fmt_seconds(r['wall_seconds'])} | {r['device']} | `{r['run_id']}` |")
    notes = [r for r in rows if r.get("note")]
    if notes:
        lines += ["", "## The report's notes", ""]
        lines += [f"- **{r['job']}**: {r['note']}" for r in notes]
    lines += ["", "## Provenance", "",
              "| experiment | cvtrain | git revision | backend | seed | dataset sha256 | run "
              "folder |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "complete":
            lines.append(f"| {r['job']} | {r['cvtrain'] or '-'} | "
                         f"{(r['git_revision'] or '-')[:12]} | {r['backend'] or '-'} | "
                         f"{r['seed'] if r['seed'] is not None else '-'} | "
                         f"{(r['dataset_sha256'] or '-')[:12]} | `{r['location']}` |")
    if report["other_jobs"]:
        lines += ["", "Runs of jobs not in the jobs folder (not in the table): "
                  + ", ".join(f"`{j}`" for j in report["other_jobs"]) + "."]
    return "\n".join(lines) + "\n"


def plot_accuracy(report: dict, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    ys = list(range(len(rows)))[::-1]
    theirs = [r["report_accuracy"] or 0 for r in rows]
    ours = [r.get("test_accuracy") or 0 for r in rows]
    ax.barh([y + 0.2 for y in ys], theirs, height=0.38, color="#999999", label="report")
    ax.barh([y - 0.2 for y in ys], ours, height=0.38, color="#1f77b4", label="cvtrain")
    for y, r in zip(ys, rows, strict=True):
        if r["status"] == "missing":
            ax.text(0.01, y - 0.2, "missing", va="center", fontsize=8, color="#b00000")
    ax.set_yticks(ys, [r["job"] + (" (synthetic data)" if r.get("synthetic") else "")
                       for r in rows])
    ax.set_xlim(0, 1)
    ax.set_xlabel("test accuracy")
    ax.legend(loc="lower right")
    ax.set_title("cvtrain vs the coursework report")
    fig.tight_layout()
    fig.savefig(dest, dpi=110)
    plt.close(fig)


def plot_curves(report: dict, dest: Path, endpoint_url: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r["status"] == "complete"]
    cols = min(3, max(1, len(rows)))
    nrows = max(1, math.ceil(len(rows) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3 * nrows), squeeze=False)
    for ax in axes.flat[len(rows):]:
        ax.axis("off")
    for ax, r in zip(axes.flat, rows, strict=False):
        history = runs.parse_history(read_text(join(r["location"], runs.HISTORY), endpoint_url))
        epochs = [h["epoch"] for h in history]
        for key, style in (("accuracy", "-"), ("val_accuracy", "--")):
            values = [h.get(key) for h in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, label=key)
        if r["report_accuracy"] is not None:
            ax.axhline(r["report_accuracy"], color="#999999", lw=1, label="report (test)")
        ax.set_title(r["job"], fontsize=10)
        ax.set_ylim(0, 1)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(dest, dpi=100)
    plt.close(fig)


def write(report: dict, out: Path, endpoint_url: str | None = None) -> list[Path]:
    """report.md, report.json, accuracy.png and curves.png in ``out``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / REPORT_MD, out / REPORT_JSON, out / ACCURACY_PNG, out / CURVES_PNG]
    paths[0].write_text(markdown(report), encoding="utf-8")
    paths[1].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    plot_accuracy(report, paths[2])
    plot_curves(report, paths[3], endpoint_url)
    return paths


__all__ = ["build", "markdown", "write"]
