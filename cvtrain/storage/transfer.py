"""Incremental, concurrent copies between local paths and ``s3://`` URIs.

A copy is planned first (list both sides, map source files to destination names, refuse
unsafe keys before anything is written), then run on a thread pool sharing one boto3 client.
A file is skipped when the destination has the same size and the same checksum: the S3 ETag
(MD5 for single-part objects, MD5 of the parts' MD5s for multipart ones) computed locally, or
the MD5 of both files for a local copy. Downloads land in a temporary file renamed into place.
"""

from __future__ import annotations

import hashlib
import math
import mimetypes
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from cvtrain.errors import StorageError, UsageError
from cvtrain.report import byte_progress
from cvtrain.storage import s3 as s3mod
from cvtrain.storage.s3 import PART_SIZE, WORKERS, S3Uri, is_s3

#: suffix of the temporary files downloads are written to before being renamed into place
PART_SUFFIX = ".cvtrain-part"
MiB = 1024 * 1024


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


@dataclass
class Ref:
    """One file at one place: a local path, or an S3 bucket and key."""

    path: Path | None = None
    bucket: str | None = None
    key: str | None = None
    size: int | None = None        # None: does not exist (yet)
    etag: str | None = None        # S3 only
    mtime_ns: int | None = None    # local only

    @property
    def label(self) -> str:
        return str(self.path) if self.bucket is None else f"s3://{self.bucket}/{self.key}"


@dataclass
class Pair:
    name: str  # relative name, for reports
    src: Ref
    dst: Ref
    force: bool = False  # send without comparing


# --------------------------------------------------------------------------- checksums

_digests: dict[tuple, str] = {}
_digests_lock = threading.Lock()


def local_etag(path: Path, part_size: int | None = None) -> str:
    """The ETag S3 gives this file: MD5 hex, or (``part_size``) ``md5(md5s)-N`` multipart.

    Cached per (path, size, mtime) for the life of the process.
    """
    st = path.stat()
    cache_key = (str(path), st.st_size, st.st_mtime_ns, part_size)
    with _digests_lock:
        hit = _digests.get(cache_key)
    if hit is not None:
        return hit
    if part_size is None:
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as fh:
            while block := fh.read(MiB):
                digest.update(block)
        value = digest.hexdigest()
    else:
        parts = []
        with open(path, "rb") as fh:
            while True:
                part = hashlib.md5(usedforsecurity=False)
                left = part_size
                while left and (block := fh.read(min(MiB, left))):
                    part.update(block)
                    left -= len(block)
                if left == part_size:
                    break
                parts.append(part.digest())
        whole = hashlib.md5(b"".join(parts), usedforsecurity=False).hexdigest()
        value = f"{whole}-{len(parts)}"
    with _digests_lock:
        _digests[cache_key] = value
    return value


def _part_candidates(size: int, parts: int) -> list[int]:
    """Part sizes that split ``size`` bytes into ``parts`` parts: ours first (and its
    doublings, as s3transfer adjusts for > 10,000 parts), then common tool defaults."""
    options = [PART_SIZE * 2**k for k in range(12)]
    options += [m * MiB for m in (5, 8, 15, 16, 32, 50, 64, 100, 128, 256, 512)]
    options.append(math.ceil(size / parts / MiB) * MiB)
    seen, out = set(), []
    for p in options:
        if p > 0 and p not in seen and math.ceil(size / p) == parts:
            seen.add(p)
            out.append(p)
    return out[:4]


def etag_matches(path: Path, etag: str) -> bool:
    etag = etag.strip('"')
    if "-" not in etag:
        return local_etag(path) == etag
    try:
        parts = int(etag.rsplit("-", 1)[1])
    except ValueError:
        return False
    size = path.stat().st_size
    return any(local_etag(path, p) == etag for p in _part_candidates(size, parts))


def _same(src: Ref, dst: Ref) -> bool:
    if dst.size is None or src.size != dst.size:
        return False
    if src.bucket is None and dst.bucket is None:
        return local_etag(src.path) == local_etag(dst.path)
    if src.bucket is not None and dst.bucket is not None:
        return bool(src.etag) and src.etag == dst.etag
    local, remote = (src, dst) if src.bucket is None else (dst, src)
    return bool(remote.etag) and etag_matches(local.path, remote.etag)


# --------------------------------------------------------------------------- safety

def safe_relative(rel: str, what: str, dest: Path) -> Path:
    """``dest / rel`` for a key-derived name, refusing anything that could land outside."""
    parts = rel.split("/")
    bad = (not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel
           or any(p in ("", ".", "..") for p in parts) or (":" in parts[0] and os.name == "nt"))
    target = dest.joinpath(*parts) if not bad else None
    if target is not None:
        root = dest.resolve()
        try:
            target.resolve().relative_to(root)
        except ValueError:
            bad = True
    if bad:
        raise StorageError(f"{what}: refusing unsafe key {rel!r}: it does not name a file "
                           f"inside {dest}")
    return target


# --------------------------------------------------------------------------- listing

def _scan_local(root: Path) -> dict[str, os.stat_result]:
    """Every regular file under ``root`` by relative POSIX name (temporary files left out)."""
    found: dict[str, os.stat_result] = {}
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir():
                stack.append((Path(entry.path), f"{prefix}{entry.name}/"))
            elif entry.is_file() and not entry.name.endswith((PART_SUFFIX, ".tmp")):
                found[prefix + entry.name] = entry.stat()
    return found


def _local_ref(path: Path) -> Ref:
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return Ref(path=path)
    if not path.is_file():
        return Ref(path=path)
    return Ref(path=path, size=st.st_size, mtime_ns=st.st_mtime_ns)


def _sources(src: str, endpoint_url: str | None, missing_ok: bool):
    """(mode, {relative name: Ref}) where mode is "file" or "folder"; None when nothing."""
    if is_s3(src):
        uri = S3Uri.parse(src)
        listing = s3mod.list_objects(uri, endpoint_url)
        if uri.key and not uri.key.endswith("/"):
            children = [o for o in listing if o.key.startswith(uri.key + "/")]
            exact = [o for o in listing if o.key == uri.key]
            if not children and exact:
                o = exact[0]
                return "file", {uri.name: Ref(bucket=uri.bucket, key=o.key, size=o.size,
                                              etag=o.etag)}
            listing, prefix = children, uri.key + "/"
        else:
            prefix = uri.key
        refs = {o.key[len(prefix):]: Ref(bucket=uri.bucket, key=o.key, size=o.size, etag=o.etag)
                for o in listing if not o.key.endswith("/")}  # "folder/" markers are not files
        if not refs:
            if missing_ok:
                return None
            raise StorageError(f"{src}: no such key or prefix")
        return "folder", refs
    path = Path(src)
    if path.is_file():
        return "file", {path.name: _local_ref(path)}
    if path.is_dir():
        return "folder", {rel: Ref(path=path.joinpath(*rel.split("/")), size=st.st_size,
                                   mtime_ns=st.st_mtime_ns)
                          for rel, st in _scan_local(path).items()}
    if missing_ok:
        return None
    raise UsageError(f"{src}: no such file or folder")


def plan(src: str, dst: str, endpoint_url: str | None = None,
         missing_ok: bool = False) -> tuple[str, list[Pair]] | None:
    """(destination, pairs): every source file with where it goes and what is there now."""
    found = _sources(src, endpoint_url, missing_ok)
    if found is None:
        return None
    mode, sources = found
    pairs: list[Pair] = []
    if is_s3(dst):
        d = S3Uri.parse(dst)
        if mode == "file":
            (name, ref), = sources.items()
            key = d.key + name if (not d.key or d.key.endswith("/")) else d.key
            listing = [o for o in s3mod.list_objects(S3Uri(d.bucket, key), endpoint_url)
                       if o.key == key]
            there = {o.key: o for o in listing}
            destination = f"s3://{d.bucket}/{key}"
            targets = {name: key}
        else:
            prefix = d.folder().key
            there = {o.key: o for o in s3mod.list_objects(S3Uri(d.bucket, prefix), endpoint_url)}
            destination = f"s3://{d.bucket}/{prefix}"
            targets = {rel: prefix + rel for rel in sources}
        for rel, ref in sources.items():
            key = targets[rel]
            o = there.get(key)
            pairs.append(Pair(rel, ref, Ref(bucket=d.bucket, key=key,
                                            size=o.size if o else None,
                                            etag=o.etag if o else None)))
        return destination, pairs

    root = Path(dst)
    if mode == "file":
        (name, ref), = sources.items()
        if root.is_dir() or dst.endswith(("/", os.sep)):
            target = safe_relative(name, ref.label, root)
        else:
            target = root
        return str(target), [Pair(name, ref, _local_ref(target))]
    if root.exists() and not root.is_dir():
        raise UsageError(f"{dst}: is a file; expected a folder to copy {src} into")
    targets = {rel: safe_relative(rel, ref.label, root) for rel, ref in sources.items()}
    existing = _scan_local(root) if root.is_dir() else {}
    for rel, ref in sources.items():
        st = existing.get(rel)
        dref = Ref(path=targets[rel])
        if st is not None:
            dref.size, dref.mtime_ns = st.st_size, st.st_mtime_ns
        pairs.append(Pair(rel, ref, dref))
    return str(root), pairs


# --------------------------------------------------------------------------- transfers

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
    from cvtrain.data.cifar import cache_dir

    uri = S3Uri.parse(location_s)
    base = cache_dir() / "s3" / uri.bucket
    key = uri.key.rstrip("/")
    target = safe_relative(key, location_s, base) if key else base
    stats = sync(location_s, str(target), endpoint_url=endpoint_url, progress=progress)
    return Path(stats.destination)
