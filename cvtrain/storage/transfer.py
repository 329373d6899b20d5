"""Incremental, concurrent copies between local paths and ``s3://`` URIs.

A copy is planned first (list both sides, map source files to destination names, refuse
unsafe keys before anything is written), then run on a thread pool sharing one boto3 client.
A file is skipped when the destination has the same size and the same checksum: the S3 ETag
(MD5 for single-part objects, MD5 of the parts' MD5s for multipart ones) computed locally, or
the MD5 of both files for a local copy. Downloads land in a temporary file renamed into place.
"""

from __future__ import annotations

import mimetypes
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from cvtrain.errors import StorageError, UsageError
from cvtrain.report import byte_progress
from cvtrain.storage import s3 as s3mod
from cvtrain.storage.etag import MiB
from cvtrain.storage.plan import PART_SUFFIX, Pair, _same, plan, safe_relative
from cvtrain.storage.s3 import PART_SIZE, WORKERS, S3Uri, is_s3


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover


@dataclass
class SyncStats:
    """What a copy did. ``sent_names`` are relative names in the order they completed."""

    sent: int = 0
    skipped: int = 0
    bytes_sent: int = 0
    bytes_skipped: int = 0
    seconds: float = 0.0
    found: bool = True          # False: nothing at the source (only with missing_ok)
    destination: str = ""       # the destination file (one-file copy) or folder
    sent_names: list[str] = field(default_factory=list)

    def summary(self) -> str:
        files = "file" if self.sent == 1 else "files"
        return (f"{self.sent} {files} sent ({human_bytes(self.bytes_sent)}), "
                f"{self.skipped} unchanged skipped ({human_bytes(self.bytes_skipped)}) "
                f"in {self.seconds:.2f} s")

    def add(self, other: SyncStats) -> None:
        self.sent += other.sent
        self.skipped += other.skipped
        self.bytes_sent += other.bytes_sent
        self.bytes_skipped += other.bytes_skipped
        self.seconds += other.seconds
        self.sent_names.extend(other.sent_names)


def _temp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{PART_SUFFIX}")


def _copy(pair: Pair, endpoint_url: str | None, advance: Callable[[int], None]) -> None:
    src, dst = pair.src, pair.dst
    size = src.size or 0
    if dst.bucket is not None:
        client = s3mod.client(endpoint_url)
        if src.bucket is not None:
            client.copy({"Bucket": src.bucket, "Key": src.key}, dst.bucket, dst.key,
                        Config=s3mod.transfer_config())
            advance(size)
            return
        extra = {}
        ctype = mimetypes.guess_type(src.path.name)[0]
        if ctype:
            extra["ContentType"] = ctype
        if size >= PART_SIZE:
            client.upload_file(str(src.path), dst.bucket, dst.key, ExtraArgs=extra or None,
                               Config=s3mod.transfer_config(), Callback=advance)
        else:
            body = src.path.read_bytes()  # one consistent snapshot of a file being written
            client.put_object(Bucket=dst.bucket, Key=dst.key, Body=body, **extra)
            advance(len(body))
        return
    target = dst.path
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(target)
    try:
        if src.bucket is None:
            shutil.copyfile(src.path, tmp)
            advance(size)
        elif size >= PART_SIZE:
            s3mod.client(endpoint_url).download_file(src.bucket, src.key, str(tmp),
                                                     Config=s3mod.transfer_config(),
                                                     Callback=advance)
        else:
            body = s3mod.client(endpoint_url).get_object(Bucket=src.bucket, Key=src.key)["Body"]
            with open(tmp, "wb") as fh:
                for chunk in body.iter_chunks(MiB):
                    fh.write(chunk)
                    advance(len(chunk))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _one(pair: Pair, endpoint_url: str | None, advance, tolerate_missing: bool) -> bool | None:
    """Copy one pair unless identical; True sent, False skipped, None source vanished."""
    try:
        if not pair.force and _same(pair.src, pair.dst):
            advance(pair.src.size or 0)
            return False
        _copy(pair, endpoint_url, advance)
        return True
    except FileNotFoundError:
        if tolerate_missing and pair.src.bucket is None and not pair.src.path.exists():
            return None
        raise StorageError(f"{pair.src.label}: disappeared while being copied") from None
    except StorageError:
        raise
    except OSError as exc:
        what = pair.dst.label if pair.dst.bucket is None else pair.src.label
        raise StorageError(f"{what}: {exc.strerror or exc} (copying {pair.src.label} "
                           f"to {pair.dst.label})") from None
    except Exception as exc:
        if s3mod.is_botocore_error(exc):
            what = pair.src.label if pair.src.bucket is not None else pair.dst.label
            raise StorageError(s3mod._describe(exc, what)) from None
        raise


def execute(pairs: Iterable[Pair], *, endpoint_url: str | None = None, progress: bool = False,
            workers: int = WORKERS, description: str = "copying",
            tolerate_missing: bool = False, on_done: Callable[[Pair, bool], None] | None = None
            ) -> SyncStats:
    """Run planned pairs on a thread pool; stops at the first error (one-line StorageError)."""
    pairs = list(pairs)
    stats = SyncStats()
    t0 = time.perf_counter()
    if not pairs:
        return stats
    total = sum(p.src.size or 0 for p in pairs)
    with byte_progress(progress, total, description, transient=True) as advance:
        if len(pairs) == 1 or workers <= 1:
            results = ((p, _one(p, endpoint_url, advance, tolerate_missing)) for p in pairs)
            _collect(results, stats, on_done)
        else:
            with ThreadPoolExecutor(max_workers=min(workers, len(pairs)),
                                    thread_name_prefix="cvtrain-sync") as pool:
                futures = {pool.submit(_one, p, endpoint_url, advance, tolerate_missing): p
                           for p in pairs}
                try:
                    _collect(((futures[f], f.result()) for f in as_completed(futures)),
                             stats, on_done)
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    stats.seconds = time.perf_counter() - t0
    return stats


def _collect(results, stats: SyncStats, on_done) -> None:
    for pair, sent in results:
        if sent is None:
            continue
        size = pair.src.size or 0
        if sent:
            stats.sent += 1
            stats.bytes_sent += size
            stats.sent_names.append(pair.name)
        else:
            stats.skipped += 1
            stats.bytes_skipped += size
        if on_done is not None:
            on_done(pair, sent)


def sync(src: str | os.PathLike, dst: str | os.PathLike, *, endpoint_url: str | None = None,
         progress: bool = False, workers: int = WORKERS, missing_ok: bool = False) -> SyncStats:
    """Copy a file or folder between local paths and s3 URIs, skipping unchanged files.

    A source folder (or prefix) lands under the destination with the same relative names;
    a source file lands at the destination, or inside it when it is a folder (a local
    folder that exists, or a path / key ending with "/"). Nothing is deleted.
    ``missing_ok``: return ``SyncStats(found=False)`` instead of failing when the source
    does not exist.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    t0 = time.perf_counter()
    planned = plan(src, dst, endpoint_url, missing_ok=missing_ok)
    if planned is None:
        return SyncStats(found=False, seconds=time.perf_counter() - t0)
    destination, pairs = planned
    verb = "downloading" if is_s3(src) and not is_s3(dst) else (
        "uploading" if is_s3(dst) else "copying")
    stats = execute(pairs, endpoint_url=endpoint_url, progress=progress, workers=workers,
                    description=verb)
    stats.destination = destination
    stats.seconds = time.perf_counter() - t0
    return stats


def push(src: str | os.PathLike, uri: str, **kwargs) -> SyncStats:
    """Upload a local file or folder to ``uri`` (or copy it to a local path)."""
    if is_s3(os.fspath(src)):
        raise UsageError(f"{os.fspath(src)}: expected a local file or folder to push "
                         "(use `cvtrain data pull` to download)")
    return sync(src, uri, **kwargs)


def pull(uri: str, dest: str | os.PathLike, **kwargs) -> SyncStats:
    """Download a key or prefix (or copy a local path) to ``dest``."""
    if is_s3(os.fspath(dest)):
        raise UsageError(f"{os.fspath(dest)}: expected a local file or folder to pull into "
                         "(use `cvtrain data push` to upload)")
    return sync(uri, dest, **kwargs)


def localize(location: str | os.PathLike, *, endpoint_url: str | None = None,
             progress: bool = False) -> Path:
    """A local path for ``location``: local paths unchanged; an s3 URI is synced
    (incrementally) into ``<cache>/s3/<bucket>/<key>`` and that file or folder returned."""
    location_s = os.fspath(location)
    if not is_s3(location_s):
        return Path(location)
    from cvtrain.paths import cache_dir

    uri = S3Uri.parse(location_s)
    base = cache_dir() / "s3" / uri.bucket
    key = uri.key.rstrip("/")
    target = safe_relative(key, location_s, base) if key else base
    stats = sync(location_s, str(target), endpoint_url=endpoint_url, progress=progress)
    return Path(stats.destination)
