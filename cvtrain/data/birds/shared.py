"""Backbone features shared through the results root, for jobs that run on machines of their
own (AWS Batch): one extraction serves every head job with the same feature key.

Layout, under the results root (a folder or ``s3://bucket/prefix``; on Batch the prefix the
job role may write, e.g. ``s3://bucket/runs``)::

    <results>/.features/<key>/<writer>/{train,test}_{pooled,maps}.npy, meta.json
    <results>/.features/<key>/features.json      the manifest, written last

A writer uploads its files into a folder of its own (``<writer>``: time and random hex),
then the manifest naming that folder and each file's size and sha256. The manifest is one
object, replaced whole, so a reader finds either no manifest or one whose folder is complete;
two writers at once (heads that extract for themselves) never mix their files. A reader
downloads the folder into a temporary one beside the local cache entry, checks every file
against the manifest, and only then renames it into the cache: features that do not match
are not used (the job extracts its own). ``.features`` cannot be a job's name (job names
start with a letter or digit), and ``results ls`` skips it.

Sharing is on only inside :func:`sharing` (the Batch entry turns it on):
:func:`cvtrain.data.birds.features.load_or_extract` then looks here after a local cache miss
and publishes what it extracted.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cvtrain.errors import CvtrainError, StorageError

SHARED_FOLDER = ".features"
MANIFEST = "features.json"
#: 2: the manifest format of :mod:`cvtrain.manifest` (1 named files by ``name``)
FORMAT = 2


@dataclass(frozen=True)
class Shared:
    """Where features are shared: a results root and its S3 endpoint."""

    results: str
    endpoint_url: str | None = None

    def location(self, key: str, *parts: str) -> str:
        from cvtrain.storage import join

        return join(self.results, SHARED_FOLDER, key, *parts)


_current: list[Shared] = []


@contextlib.contextmanager
def sharing(results: str | None, endpoint_url: str | None = None):
    """Within the block, features are looked up in and published to ``results``
    (None: not shared)."""
    if results is None:
        yield
        return
    _current.append(Shared(str(results).rstrip("/"), endpoint_url))
    try:
        yield
    finally:
        _current.pop()


def current() -> Shared | None:
    return _current[-1] if _current else None


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".npy", ".json"))


def publish(path: Path, key: str, shared: Shared, log=None) -> str | None:
    """Upload the cache entry ``path`` (features of ``key``) to ``shared``: its files into a
    writer folder, then the manifest. The manifest's location, or None when the upload failed
    (said in one line: the features are still used here; others extract their own)."""
    from cvtrain import manifest
    from cvtrain.storage import sync

    writer = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"
    made = manifest.build(path, [f.name for f in _files(path)], format=FORMAT, key=key,
                          folder=writer,
                          by=os.environ.get("AWS_BATCH_JOB_ID") or os.uname().nodename)
    target = shared.location(key, MANIFEST)
    try:
        sync(path, shared.location(key, writer) + "/", endpoint_url=shared.endpoint_url)
        with tempfile.TemporaryDirectory(prefix="cvtrain-features-") as tmp:
            local = Path(tmp) / MANIFEST
            local.write_text(json.dumps(made, indent=2) + "\n", encoding="utf-8")
            sync(local, target, endpoint_url=shared.endpoint_url)
    except CvtrainError as exc:
        _say(log, f"[bold]features[/]: not shared ({exc}); used here only")
        return None
    _say(log, f"[bold]features[/]: shared as {target}")
    return target


def fetch(key: str, dest: Path, shared: Shared, log=None) -> str | None:
    """The features of ``key`` from ``shared`` into the cache entry ``dest``, each file
    checked against the manifest; the manifest's location, or None when there is none, it
    cannot be read, or what arrived does not match it (said in one line)."""
    from cvtrain.results import read_text

    where = shared.location(key, MANIFEST)
    try:
        text = read_text(where, shared.endpoint_url)
    except StorageError as exc:
        _say(log, f"[bold]features[/]: cannot read {where} ({exc}); extracting here")
        return None
    if text is None:
        return None
    problem = _fetch(text, key, dest, shared)
    if problem:
        _say(log, f"[bold]features[/]: {where}: {problem}; extracting here")
        return None
    _say(log, f"[bold]features[/]: fetched from {where}")
    return where


def _fetch(text: str, key: str, dest: Path, shared: Shared) -> str | None:
    """Download and check; what went wrong, or None when ``dest`` holds the features."""
    from cvtrain import manifest
    from cvtrain.storage import sync

    try:
        made = json.loads(text)
    except ValueError:
        made = None
    if not manifest.well_formed(made) or not isinstance(made.get("folder"), str):
        return "not a features manifest"
    folder, wanted = made["folder"], manifest.listed(made)
    if (made.get("format") != FORMAT or made.get("key") != key
            or not _plain(folder) or not all(_plain(n) for n in wanted)
            or "meta.json" not in wanted):
        return "not a features manifest of this key and format"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=key + ".", dir=dest.parent))
    try:
        try:
            sync(shared.location(key, folder) + "/", tmp, endpoint_url=shared.endpoint_url)
        except CvtrainError as exc:
            return f"download failed ({exc})"
        mismatch = manifest.problems(tmp, made)
        if mismatch:
            return mismatch[0]
        for extra in set(p.name for p in tmp.iterdir()) - set(wanted):
            (tmp / extra).unlink()
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)  # a reader sees the whole entry or none
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def share_key(spec) -> str | None:
    """What a job's backbone features depend on as far as its spec says (the data's
    location, layout and image size, the backbone, its weights; the seed for random
    weights), so jobs with the same key compute the same features; None for a job that
    does not train on backbone features, or whose features cannot repeat (random weights,
    no seed)."""
    from cvtrain.spec import input_kind

    if input_kind(spec) != "backbone_features":
        return None
    weights, seed = str(getattr(spec.model, "weights", "")), None
    if weights.lower() == "none":
        if spec.seed is None:
            return None
        seed = spec.seed
    data = spec.data
    return json.dumps({"dataset": data.dataset, "path": data.path,
                       "layout": getattr(data, "layout", None),
                       "image_size": getattr(data, "image_size", None),
                       "backbone": getattr(spec.model, "backbone", None),
                       "weights": weights, "seed": seed}, sort_keys=True)


def extract_and_share(spec, results: str, endpoint_url: str | None = None, log=None) -> dict:
    """What a features job does: the backbone features ``spec``'s head trains on, from the
    local cache or ``results`` if they are there already, else extracted here and shared
    in ``results``; the run's ``features`` details (key, cache, extraction seconds, shared).
    A job that does not train on backbone features is refused."""
    from cvtrain.data.registry import get_dataset
    from cvtrain.errors import UsageError
    from cvtrain.spec import input_kind
    from cvtrain.storage import is_s3, localize

    kind = input_kind(spec)
    if kind != "backbone_features":
        raise UsageError(f"{spec.name}: its model trains on {kind}, not backbone features; "
                         "nothing to extract")
    dataset = get_dataset(spec.data.dataset)
    path = spec.data.path
    if path is not None and is_s3(path):
        path = localize(path)
    data = dataset.load(spec.data, path, progress=False)
    with sharing(results, endpoint_url):
        splits = dataset.streams(spec, data, kind, spec.seed if spec.seed is not None else 0,
                                 log, 0)
    details = dict(splits.details.get("features") or {})
    if not details.get("shared") and details.get("cache") == "hit":  # in this cache only
        shared = Shared(str(results).rstrip("/"), endpoint_url)
        details["shared"] = publish(Path(details["path"]), details["key"], shared, log)
    return details


def _plain(name) -> bool:
    return (isinstance(name, str) and bool(name) and name not in (".", "..")
            and "/" not in name and "\\" not in name)


def _say(log, text: str) -> None:
    if log is not None:
        log.print(text)


__all__ = ["MANIFEST", "SHARED_FOLDER", "Shared", "current", "extract_and_share", "fetch",
           "publish", "share_key", "sharing"]
