"""Planning a copy: list both sides, map source files to destination names, decide what
is already there (same size and checksum), and refuse unsafe keys, all before anything is
written."""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cvtrain.errors import StorageError, UsageError
from cvtrain.storage import s3 as s3mod
from cvtrain.storage.etag import etag_matches, local_etag
from cvtrain.storage.s3 import PART_SIZE, S3Uri, is_s3

#: suffix of the temporary files downloads are written to before being renamed into place
PART_SUFFIX = ".cvtrain-part"


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

class Confined:
    """Key-derived names checked to land inside ``dest`` (symlinks followed), each folder
    resolved once: checking 6,000 names costs a few lstat calls each, not a full
    ``resolve()`` of every path (which walks every component, twice)."""

    def __init__(self, dest: Path):
        self.dest = dest
        self.root = os.path.realpath(dest)
        self.folders: dict[Path, str] = {}

    def __call__(self, rel: str, what: str) -> Path:
        """``dest / rel``, refusing anything that could land outside (StorageError)."""
        parts = rel.split("/")
        bad = (not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel
               or any(p in ("", ".", "..") for p in parts)
               or (":" in parts[0] and os.name == "nt"))
        if not bad:
            target = self.dest.joinpath(*parts)
            bad = not self._inside(target)
        if bad:
            raise StorageError(f"{what}: refusing unsafe key {rel!r}: it does not name a "
                               f"file inside {self.dest}")
        return target

    def _inside(self, target: Path) -> bool:
        folder = self.folders.get(target.parent)
        if folder is None:
            folder = self.folders[target.parent] = os.path.realpath(target.parent)
        real = (os.path.realpath(target) if os.path.islink(target)
                else os.path.join(folder, target.name))
        return real == self.root or real.startswith(self.root.rstrip(os.sep) + os.sep)


def safe_relative(rel: str, what: str, dest: Path) -> Path:
    """``dest / rel`` for a key-derived name, refusing anything that could land outside."""
    return Confined(dest)(rel, what)


# --------------------------------------------------------------------------- listing

def scan_local(root: Path) -> dict[str, os.stat_result]:
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
        prefix = uri.folder().key
        listing = s3mod.list_objects(S3Uri(uri.bucket, prefix), endpoint_url)
        if uri.key != prefix and not listing:  # no folder by that name: a key?
            o = s3mod.head(uri, endpoint_url)
            if o is not None:
                return "file", {uri.name: Ref(bucket=uri.bucket, key=o.key, size=o.size,
                                              etag=o.etag)}
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
                          for rel, st in scan_local(path).items()}
    if missing_ok:
        return None
    raise UsageError(f"{src}: no such file or folder")


@contextlib.contextmanager
def hashing_ahead(paths: list[Path]):
    """Compute the checksums of ``paths`` (small files: one MD5 each, cached by
    :func:`local_etag`) in a background thread while the block runs, typically a listing
    that mostly waits on the network; what is not done when the block ends is left for
    the comparison to do as before. hashlib and file reads release the GIL."""
    if not paths:
        yield
        return
    done = threading.Event()

    def work():
        for path in paths:
            if done.is_set():
                return
            try:
                local_etag(path)
            except OSError:  # vanished or unreadable: the comparison will say so
                pass

    thread = threading.Thread(target=work, name="cvtrain-hash-ahead", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def plan(src: str, dst: str, endpoint_url: str | None = None,
         missing_ok: bool = False) -> tuple[str, list[Pair]] | None:
    """(destination, pairs): every source file with where it goes and what is there now.

    Local files that will be compared with a listing are hashed in a background thread
    while the listing is fetched (:func:`hashing_ahead`), so a no-change re-sync costs
    little more than the listing itself."""
    root = Path(dst)
    existing = None
    if is_s3(src) and not is_s3(dst) and root.is_dir():  # a pull into a folder
        existing = scan_local(root)
        ahead = [root.joinpath(*rel.split("/")) for rel, st in existing.items()
                 if st.st_size < PART_SIZE]
        with hashing_ahead(ahead):
            found = _sources(src, endpoint_url, missing_ok)
    else:
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
            o = s3mod.head(S3Uri(d.bucket, key), endpoint_url)
            there = {o.key: o} if o is not None else {}
            destination = f"s3://{d.bucket}/{key}"
            targets = {name: key}
        else:
            prefix = d.folder().key
            ahead = [ref.path for ref in sources.values()
                     if ref.bucket is None and (ref.size or 0) < PART_SIZE]
            with hashing_ahead(ahead):
                listing = s3mod.list_objects(S3Uri(d.bucket, prefix), endpoint_url)
            there = {o.key: o for o in listing}
            destination = f"s3://{d.bucket}/{prefix}"
            targets = {rel: prefix + rel for rel in sources}
        for rel, ref in sources.items():
            key = targets[rel]
            o = there.get(key)
            pairs.append(Pair(rel, ref, Ref(bucket=d.bucket, key=key,
                                            size=o.size if o else None,
                                            etag=o.etag if o else None)))
        return destination, pairs

    if mode == "file":
        (name, ref), = sources.items()
        if root.is_dir() or dst.endswith(("/", os.sep)):
            target = safe_relative(name, ref.label, root)
        else:
            target = root
        return str(target), [Pair(name, ref, _local_ref(target))]
    if root.exists() and not root.is_dir():
        raise UsageError(f"{dst}: is a file; expected a folder to copy {src} into")
    confine = Confined(root)
    targets = {rel: confine(rel, ref.label) for rel, ref in sources.items()}
    if existing is None:
        existing = scan_local(root) if root.is_dir() else {}
    for rel, ref in sources.items():
        st = existing.get(rel)
        dref = Ref(path=targets[rel])
        if st is not None:
            dref.size, dref.mtime_ns = st.st_size, st.st_mtime_ns
        pairs.append(Pair(rel, ref, dref))
    return str(root), pairs


# --------------------------------------------------------------------------- transfers
