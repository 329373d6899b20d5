"""Results roots: find, show, fetch and compare run folders, locally or in a bucket.

A results root is a local folder (``./runs`` or ``$CVTRAIN_RUNS`` by default) or
``s3://bucket/prefix`` holding ``<job>/<run-id>/`` run folders (see :mod:`cvtrain.runs`).
A run is complete when its ``manifest.json`` is present. The CLI (``cvtrain results``)
only formats what these functions return.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cvtrain import runs
from cvtrain.errors import StorageError, UsageError
from cvtrain.paths import default_out_dir
from cvtrain.runs import RunFolder
from cvtrain.storage.s3 import S3Uri, is_s3


def default_root() -> str:
    return str(default_out_dir())


def _plain(part: str) -> bool:
    return bool(part) and part not in (".", "..") and "\\" not in part


def resolve_run(run: str, root: str | None = None) -> RunFolder:
    """The run folder ``run`` names: an s3 URI or folder ``<root>/<job>/<run-id>``, or
    ``<job>/<run-id>`` under ``root`` (default: ./runs or $CVTRAIN_RUNS)."""
    if is_s3(run):
        uri = S3Uri.parse(run)
        parts = uri.key.strip("/").split("/")
        if len(parts) < 2 or not all(_plain(p) for p in parts[-2:]):
            raise UsageError(f"{run}: expected s3://bucket/prefix/<job>/<run-id>")
        base = f"s3://{uri.bucket}/" + "/".join(parts[:-2])
        return RunFolder(base, parts[-2], parts[-1])
    parts = run.strip("/").split("/")
    relative = len(parts) == 2 and not os.path.isabs(run) and all(_plain(p) for p in parts)
    if relative and (root is not None or not Path(run).is_dir()):
        return RunFolder(root or default_root(), parts[0], parts[1])
    path = Path(run)
    if path.is_dir():
        path = path.resolve()
        return RunFolder(str(path.parent.parent), path.parent.name, path.name)
    if path.exists():
        raise UsageError(f"{run}: not a folder; expected a run folder, "
                         "s3://bucket/prefix/<job>/<run-id>, or <job>/<run-id> under --root")
    # not found: the same exit code as a run missing under a root or in a bucket
    raise StorageError(f"{run}: no such run folder; expected a run folder, "
                       "s3://bucket/prefix/<job>/<run-id>, or <job>/<run-id> under --root "
                       "(cvtrain results ls lists them)")


def read_text(location: str, endpoint_url: str | None = None) -> str | None:
    """A file's text at a local path or s3 URI; None when it does not exist."""
    if is_s3(location):
        from cvtrain.storage.s3 import read_bytes

        data = read_bytes(S3Uri.parse(location), endpoint_url)
        return None if data is None else data.decode("utf-8", errors="replace")
    try:
        return Path(location).read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _parse_metrics(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def run_row(ref: RunFolder, metrics: dict | None, complete: bool) -> dict:
    """One line of ``results ls``: what a table or a script needs about a run."""
    m = metrics or {}
    report = m.get("report") or {}
    acc, rep_acc = m.get("test_accuracy"), report.get("test_accuracy")
    loss, rep_loss = m.get("test_loss"), report.get("test_loss")
    synthetic = runs.is_synthetic(m)
    if synthetic:  # no difference from the report: it was not measured on the same data
        acc = loss = None
    return {
        "job": ref.job,
        "run_id": ref.run_id,
        "location": ref.location,
        "complete": complete,
        "started": m.get("started"),
        "finished": m.get("finished"),
        "test_accuracy": m.get("test_accuracy"),
        "test_loss": m.get("test_loss"),
        "synthetic": synthetic,
        "report_accuracy": rep_acc,
        "report_loss": rep_loss,
        "accuracy_difference": (None if acc is None or rep_acc is None
                                else round(acc - rep_acc, 6)),
        "loss_difference": None if loss is None or rep_loss is None else round(loss - rep_loss, 6),
        "epochs_run": m.get("epochs_run"),
        "best_epoch": m.get("best_epoch"),
        "wall_seconds": m.get("wall_seconds"),
        "fingerprint": m.get("fingerprint"),
    }


def list_runs(root: str | None = None, job: str | None = None,
              endpoint_url: str | None = None) -> list[dict]:
    """Every run under ``root`` (optionally one job's), oldest first within a job.

    In a bucket: one paginated listing of the prefix, then only each run's metrics.json,
    fetched concurrently.
    """
    root = root or default_root()
    found: dict[tuple[str, str], set[str]] = {}
    if is_s3(root):
        from cvtrain.storage.s3 import list_objects

        base = S3Uri.parse(root).folder()
        prefix = base.key + (f"{job}/" if job else "")
        for o in list_objects(S3Uri(base.bucket, prefix), endpoint_url):
            parts = o.key[len(base.key):].split("/", 2)
            # keys that cannot be a <job>/<run-id> folder (empty, '..') are not runs, nor
            # what no job can be called (.features: shared backbone features)
            if (len(parts) == 3 and parts[2] and _plain(parts[0]) and _plain(parts[1])
                    and not parts[0].startswith(".")):
                found.setdefault((parts[0], parts[1]), set()).add(parts[2])
    else:
        path = Path(root)
        if not path.is_dir():
            if path.exists():
                raise UsageError(f"{root}: not a folder; expected a results folder of "
                                 "<job>/<run-id> run folders")
            # not found: the same exit code as a missing run, or a prefix in a bucket
            raise StorageError(f"{root}: no such results folder (cvtrain run writes to "
                               "./runs, --out DIR or $CVTRAIN_RUNS)")
        for job_dir in sorted(p for p in path.iterdir()
                              if p.is_dir() and not p.name.startswith(".")):
            if job and job_dir.name != job:
                continue
            for run_dir in sorted(p for p in job_dir.iterdir() if p.is_dir()):
                found[(job_dir.name, run_dir.name)] = {
                    name for name in (runs.MANIFEST, runs.METRICS) if (run_dir / name).is_file()}
    refs = {key: RunFolder(root, *key) for key in sorted(found)}

    def metrics_of(key):
        if runs.METRICS not in found[key]:
            return None
        return _parse_metrics(read_text(refs[key].join(runs.METRICS), endpoint_url))

    keys = list(refs)
    if is_s3(root) and len(keys) > 1:
        with ThreadPoolExecutor(max_workers=min(16, len(keys))) as pool:
            metrics = list(pool.map(metrics_of, keys))
    else:
        metrics = [metrics_of(k) for k in keys]
    return [run_row(refs[k], m, runs.MANIFEST in found[k]) for k, m in zip(keys, metrics,
                                                                         strict=True)]


def run_files(run: RunFolder, endpoint_url: str | None = None) -> list[tuple[str, int]]:
    """(relative path, size) of every file of the run, sorted; raises when there is none."""
    if run.is_remote:
        from cvtrain.storage.s3 import list_objects

        base = S3Uri.parse(run.location).folder()
        files = [(o.key[len(base.key):], o.size) for o in list_objects(base, endpoint_url)]
    else:
        from cvtrain.storage.plan import scan_local

        files = [(rel, st.st_size) for rel, st in scan_local(run.path).items()]
    if not files:
        raise StorageError(f"{run.location}: no such run (no files there; cvtrain results ls "
                           "lists the runs)")
    return sorted(files)


def run_metrics(run: RunFolder, endpoint_url: str | None = None) -> dict | None:
    """The run's ``metrics.json``, or None when it has none (or it is unreadable)."""
    return _parse_metrics(read_text(run.join(runs.METRICS), endpoint_url))


def fetch_run(run: RunFolder, dest: Path, endpoint_url: str | None = None,
              progress: bool = False) -> tuple[RunFolder, object]:
    """Download the run into ``dest/<job>/<run-id>/`` (so ``dest`` is a results root) and
    check every file against the manifest's sha256: (the local copy, the copy's
    :class:`~cvtrain.storage.SyncStats`). A copy that does not match its manifest is one
    StorageError line; an incomplete run (no manifest) arrives unchecked."""
    from cvtrain.storage.transfer import sync

    local = run.under(dest)
    stats = sync(run.location + ("/" if run.is_remote else ""), local.path,
                 endpoint_url=endpoint_url, progress=progress, missing_ok=True)
    if not stats.found:
        raise StorageError(f"{run.location}: no such run (no files there)")
    problems = runs.verify(local.path) if local.is_complete() else []
    if problems:
        shown = "; ".join(problems[:3])
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise StorageError(f"{local.path}: its copy of {run.location} does not match its "
                           f"manifest.json: {shown}{more}")
    return local, stats


def flatten(data, prefix: str = "") -> dict:
    """Nested mappings as dotted keys (lists and scalars are leaves)."""
    out = {}
    if isinstance(data, dict):
        for key, value in data.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict) and value:
                out.update(flatten(value, name))
            else:
                out[name] = value
    elif prefix:
        out[prefix] = data
    return out


@dataclass
class Comparison:
    refs: list[RunFolder]
    metrics: list[dict | None]
    spec_diff: dict[str, list]  # dotted key -> one value per run (only keys that differ)
    histories: list[list[dict]]
    plot: Path | None


def compare_runs(refs: list[RunFolder], plot: Path | None = None,
                 endpoint_url: str | None = None) -> Comparison:
    """Metrics side by side, the spec keys whose values differ, curves overlaid in ``plot``."""
    import yaml

    from cvtrain.spec.load import OVERRIDE_NOTE

    def load(ref: RunFolder):
        texts = [read_text(ref.join(name), endpoint_url)
                 for name in (runs.METRICS, runs.SPEC, runs.HISTORY)]
        if all(t is None for t in texts):
            raise StorageError(f"{ref.location}: no such run (no metrics.json, spec.yaml or "
                               "history.csv)")
        return texts

    with ThreadPoolExecutor(max_workers=min(8, len(refs))) as pool:
        loaded = list(pool.map(load, refs))
    metrics, specs, histories = [], [], []
    for ref, (m_text, s_text, h_text) in zip(refs, loaded, strict=True):
        metrics.append(_parse_metrics(m_text))
        try:
            spec = yaml.safe_load(s_text) if s_text else {}
        except yaml.YAMLError:
            raise StorageError(f"{ref.join(runs.SPEC)}: not valid YAML") from None
        flat = flatten(spec if isinstance(spec, dict) else {})
        if isinstance(flat.get("description"), str):  # the words, not the --set note
            flat["description"] = flat["description"].split(OVERRIDE_NOTE, 1)[0]
        specs.append(flat)
        histories.append(runs.parse_history(h_text))
    keys = sorted(set().union(*specs)) if specs else []
    missing = object()
    diff = {}
    for key in keys:
        values = [s.get(key, missing) for s in specs]
        if any(v != values[0] for v in values[1:]):
            diff[key] = [None if v is missing else v for v in values]
    _data_by_content(diff, metrics)
    if plot is not None:
        from cvtrain.plots import plot_overlay

        plot_overlay(refs, histories, plot)
    return Comparison(refs, metrics, diff, histories, plot)


def _data_by_content(diff: dict[str, list], metrics: list[dict | None]) -> None:
    """The dataset compared by content where every run recorded its sha256: the same
    file under two paths (relative, absolute, another machine) is no difference, and
    the same path holding other data is one (``data.sha256``)."""
    digests = [((m or {}).get("dataset") or {}).get("sha256") for m in metrics]
    if not all(digests):
        return
    if len(set(digests)) == 1:
        diff.pop("data.path", None)
    else:
        diff["data.sha256"] = [d[:12] for d in digests]
