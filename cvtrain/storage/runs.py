"""Run folders in a results root that may be a bucket: upload as produced, download to resume.

Remote layout: ``<results_uri>/<job>/<run-id>/<the run folder's relative paths>``, with
``manifest.json`` uploaded last, so a remote run without it is incomplete. A checkpoint
is mirrored after every epoch with its ``state.json`` last, and deleted from the results
only once their copy of the run is complete.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cvtrain.errors import StorageError
from cvtrain.runs import CHECKPOINT, MANIFEST, RunFolder, is_transient
from cvtrain.storage import retries
from cvtrain.storage import s3 as s3mod
from cvtrain.storage.plan import PART_SUFFIX, Pair, Ref, safe_relative, scan_local
from cvtrain.storage.s3 import WORKERS, S3Uri, is_s3
from cvtrain.storage.transfer import SyncStats, execute, sync


class RunUploader:
    """Mirror one local run folder to its copy under ``results_uri`` while it is written.

    ``sync()`` after each checkpoint sends the files that changed since the last call (never
    ``manifest.json`` nor a half-written checkpoint; the checkpoint's ``state.json`` after
    its other files; no network call when nothing changed); ``finish()`` sends the rest,
    removes remote files the run no longer has, then uploads ``manifest.json`` last;
    ``drop_checkpoint()`` then deletes the remote checkpoint. ``order`` lists relative
    paths in the order their uploads completed.
    """

    def __init__(self, run: RunFolder, results_uri: str, endpoint_url: str | None = None,
                 workers: int = WORKERS):
        self.run_path = run.path
        self.results_uri = os.fspath(results_uri)
        self.endpoint_url = endpoint_url
        self.workers = workers
        #: where the copy is (a URI or a local path)
        self.remote = run.under(self.results_uri).location
        self.order: list[str] = []
        self._sent: dict[str, tuple[int, int]] = {}  # rel -> (size, mtime_ns) as uploaded
        self._remote: dict[str, Ref] | None = None   # what the remote run held at the start
        self._lock = threading.Lock()
        self._noop = (not is_s3(self.results_uri)
                      and Path(self.results_uri).resolve() == self.run_path.parent.parent.resolve())

    def _target(self, rel: str) -> Ref:
        if is_s3(self.remote):
            uri = S3Uri.parse(self.remote).child(rel)
            return Ref(bucket=uri.bucket, key=uri.key)
        return Ref(path=safe_relative(rel, self.remote, Path(self.remote)))

    def _remote_state(self) -> dict[str, Ref]:
        """The remote run's files, listed once (resumed runs skip what is already there)."""
        if self._remote is None:
            found: dict[str, Ref] = {}
            if is_s3(self.remote):
                prefix = S3Uri.parse(self.remote).folder()
                for o in s3mod.list_objects(prefix, self.endpoint_url):
                    rel = o.key[len(prefix.key):]
                    found[rel] = Ref(bucket=prefix.bucket, key=o.key, size=o.size, etag=o.etag)
            else:
                root = Path(self.remote)
                for rel, st in scan_local(root).items():
                    found[rel] = Ref(path=root / rel, size=st.st_size, mtime_ns=st.st_mtime_ns)
            self._remote = found
        return self._remote

    def remote_complete(self) -> bool:
        """Whether the results hold this run complete (its manifest). One listing, cached
        for later syncs; a results location that cannot be listed fails here, early."""
        if self._noop:
            return (self.run_path / MANIFEST).is_file()
        return MANIFEST in self._remote_state()

    def remote_manifest(self) -> bytes | None:
        """The manifest in the results, or None when the run there is incomplete."""
        if not self.remote_complete():
            return None
        ref = self._target(MANIFEST)
        if ref.bucket is not None:
            return s3mod.read_bytes(S3Uri(ref.bucket, ref.key), self.endpoint_url)
        return ref.path.read_bytes()

    def _local_files(self) -> dict[str, os.stat_result]:
        return {rel: st for rel, st in scan_local(self.run_path).items()
                if rel != MANIFEST and not rel.endswith(PART_SUFFIX) and not is_transient(rel)}

    def _send(self, rels_stats: dict[str, os.stat_result], compare: bool) -> SyncStats:
        remote = self._remote_state()
        pairs = []
        for rel, st in sorted(rels_stats.items()):
            dst = self._target(rel)
            # compare with what was there at the start, until we have sent our own version
            known = remote.get(rel) if compare and rel not in self._sent else None
            if known is not None:
                dst.size, dst.etag, dst.mtime_ns = known.size, known.etag, known.mtime_ns
            src = Ref(path=self.run_path.joinpath(*rel.split("/")), size=st.st_size,
                      mtime_ns=st.st_mtime_ns)
            pairs.append(Pair(rel, src, dst, force=known is None))

        def done(pair: Pair, sent: bool) -> None:
            with self._lock:
                self._sent[pair.name] = (pair.src.size, pair.src.mtime_ns)
                if sent:
                    self.order.append(pair.name)

        return execute(pairs, endpoint_url=self.endpoint_url, workers=self.workers,
                       tolerate_missing=True, on_done=done, description="uploading run")

    def sync(self) -> SyncStats:
        """Upload every file that changed since the last sync, except ``manifest.json``."""
        if self._noop:
            return SyncStats(destination=self.remote)
        changed = {rel: st for rel, st in self._local_files().items()
                   if self._sent.get(rel) != (st.st_size, st.st_mtime_ns)}
        state = f"{CHECKPOINT}/state.json"  # names the checkpoint files it goes with: last
        stats = SyncStats()
        for part in ({r: st for r, st in changed.items() if r != state},
                     {r: st for r, st in changed.items() if r == state}):
            if part:
                stats.add(self._send(part, compare=True))
        stats.destination = self.remote
        return stats

    def finish(self) -> SyncStats:
        """Sync everything, drop remote files the run does not have, upload the manifest."""
        if self._noop:
            return SyncStats(destination=self.remote)
        stats = self.sync()
        manifest = self.run_path / MANIFEST
        if not manifest.is_file():
            raise StorageError(f"{manifest}: missing; finish() uploads it last, so call it "
                               "after the run folder is finalized")
        local = set(self._local_files())
        stale = sorted((set(self._remote_state()) | set(self._sent)) - local - {MANIFEST})
        self._delete(stale)
        last = self._send({MANIFEST: manifest.stat()}, compare=False)
        stats.add(last)
        stats.destination = self.remote
        return stats

    def drop_checkpoint(self) -> None:
        """Delete the checkpoint from the results (after their copy is complete)."""
        if self._noop:
            return
        prefix = CHECKPOINT + "/"
        known = set(self._remote_state()) | set(self._sent)
        self._delete(sorted(rel for rel in known if rel.startswith(prefix)
                            or is_transient(rel)))
        for rel in [r for r in self._sent if r.startswith(prefix)]:
            del self._sent[rel]

    def _delete(self, rels: list[str]) -> None:
        if not rels:
            return
        if is_s3(self.remote):
            base = S3Uri.parse(self.remote)
            client = s3mod.client(self.endpoint_url)
            with retries.errors(self.remote):
                for i in range(0, len(rels), 1000):
                    keys = [{"Key": base.child(rel).key} for rel in rels[i:i + 1000]]
                    client.delete_objects(Bucket=base.bucket,
                                          Delete={"Objects": keys, "Quiet": True})
        else:
            for rel in rels:
                self._target(rel).path.unlink(missing_ok=True)


def download_run(run: RunFolder, dest: Path, endpoint_url: str | None = None,
                 progress: bool = False) -> bool:
    """Pull the run folder ``run`` (a copy in a results root) into ``dest``; False when
    nothing is there."""
    src = run.location + ("/" if run.is_remote else "")
    stats = sync(src, Path(dest), endpoint_url=endpoint_url, progress=progress, missing_ok=True)
    return stats.found and stats.sent + stats.skipped > 0
