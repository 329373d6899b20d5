"""What makes two runs the same run: the fingerprint of a seeded run and the complete
runs that carry it (under ``--out`` or in the results root), and the refusal to resume a
run id with another spec than it was started with."""

from __future__ import annotations

import json
from pathlib import Path

from cvtrain import runs
from cvtrain.errors import UsageError
from cvtrain.spec import JobSpec
from cvtrain.spec.schema import NOT_IN_RESULT


def fingerprint(spec: JobSpec, data_sha256: str) -> str:
    """What determines a seeded run's result, hashed: the resolved spec without its words
    (descriptions, the report's numbers), without the keys that do not change the result
    (:data:`~cvtrain.spec.schema.NOT_IN_RESULT`: how often it checkpoints) and without the
    dataset's path (its sha256 stands for it), the dataset's sha256, a weights file's
    sha256 (not its path), the seed and cvtrain's version."""
    import hashlib

    from cvtrain import __version__

    doc = _without_not_in_result(spec.model_dump(mode="json"))
    doc.pop("description", None)
    doc.pop("report", None)
    doc.get("data", {}).pop("path", None)
    payload = {"spec": doc, "data_sha256": data_sha256, "seed": spec.seed,
               "cvtrain": __version__}
    weights = getattr(spec.model, "weights", None)
    if isinstance(weights, str) and weights != "imagenet" and weights.lower() != "none":
        # a weights file counts by its content, wherever it is and whatever it is called
        from cvtrain.models.weights import weights_identity

        doc.get("model", {}).pop("weights", None)
        payload["weights"] = weights_identity(weights, spec.seed or 0)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def same_run(out: Path, spec: JobSpec, print_: str) -> runs.RunFolder | None:
    """A complete run of this job under ``out`` whose metrics carry this fingerprint."""
    folder = Path(out) / spec.name
    if not folder.is_dir():
        return None
    for path in sorted(folder.iterdir(), reverse=True):  # the newest first
        if not path.is_dir():
            continue
        run = runs.RunFolder.at(path)
        if not run.is_complete():
            continue
        try:
            metrics = json.loads(run.file(runs.METRICS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if metrics.get("fingerprint") == print_:
            return run
    return None


def same_run_in_results(results: str, endpoint_url: str | None, out: Path, spec: JobSpec,
                         print_: str) -> runs.RunFolder | None:
    """The newest complete run of this job with this fingerprint in the results root
    (``--results``: a folder or an ``s3://`` prefix), fetched into ``out`` (checked
    against its manifest); None when there is none."""
    from cvtrain.errors import StorageError
    from cvtrain.results import list_runs
    from cvtrain.storage import download_run

    try:
        rows = list_runs(results, job=spec.name, endpoint_url=endpoint_url)
    except StorageError:  # no results there yet
        return None
    matches = [r for r in rows if r["complete"] and r["fingerprint"] == print_]
    if not matches:
        return None
    run_id = max(r["run_id"] for r in matches)  # run ids begin with their start time
    run = runs.RunFolder(out, spec.name, run_id)
    if not run.is_complete():
        download_run(run.under(results), run.path, endpoint_url=endpoint_url)
        if runs.verify(run.path):
            raise StorageError(f"{run.under(results).location}: the complete run "
                               f"with this fingerprint did not arrive whole in {run.path}; "
                               "remove that folder and run again, or train anew with --force")
    return run


def refuse_other_spec(run: runs.RunFolder, spec: JobSpec, what: str) -> None:
    """UsageError naming the keys that differ (their values then and now) and how to go
    on, when this run id was started with another spec than ``spec``."""
    earlier = run.file(runs.SPEC)
    if not earlier.is_file():
        return
    text = earlier.read_text(encoding="utf-8")
    if text == spec.to_yaml() or _comparable(text) == _comparable(spec.to_yaml()):
        return  # the same, or different only in keys that do not change the result
    then, now = spec_values(text), spec_values(spec.to_yaml())
    keys = [k for k in spec_differences(text, spec.to_yaml()) if k not in NOT_IN_RESULT]
    keys = keys or ["the text"]
    if len(keys) > 1:  # the description notes the --set values: the keys say it better
        keys = [k for k in keys if k != "description"]
    shown = "; ".join(f"{k}: {_shown(then.get(k))} then, {_shown(now.get(k))} now"
                      for k in keys[:4])
    more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
    options = " ".join(_option(k, then.get(k)) for k in keys if k != "description")
    again = (f"to resume, repeat the options it was started with ({options})"
             if options and len(options) <= 300 else
             "to resume, repeat the options it was started with")
    raise UsageError(f"{run.path}: this run id {what} a different spec ({shown}{more}); "
                     f"{again}; to start afresh, choose another --run-id")


def _without_not_in_result(doc: dict) -> dict:
    """A spec document without the keys that do not change a run's result."""
    for key in NOT_IN_RESULT:
        *parents, last = key.split(".")
        node = doc
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return doc


def _comparable(text: str) -> str:
    """A spec YAML text as compared for a resume: without the keys that do not change the
    result (an older spec.yaml may lack them, a newer one may set them otherwise)."""
    import yaml

    return yaml.safe_dump(_without_not_in_result(yaml.safe_load(text) or {}), sort_keys=False)


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _option(key: str, value) -> str:
    """The option that sets ``key`` to ``value``, as typed."""
    import shlex

    if key == "seed":
        return "without --seed" if value is None else f"--seed {value}"
    text = "null" if value is None else value if isinstance(value, str) else json.dumps(value)
    return shlex.join(["--set", f"{key}={text}"])


def spec_values(text: str) -> dict:
    """A spec YAML text's values by dotted key."""
    import yaml

    from cvtrain.results import flatten

    return flatten(yaml.safe_load(text) or {})


def spec_differences(a: str, b: str) -> list[str]:
    """Dotted keys whose values differ between two spec YAML texts."""
    fa, fb = spec_values(a), spec_values(b)
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)) or ["the text"]
