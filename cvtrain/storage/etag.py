"""S3 ETags computed locally, so an unchanged file is never sent again: MD5 for a
single-part object, MD5 of the parts' MD5s for a multipart one (whose part size is
guessed from the usual choices of S3 clients). Digests are cached per (path, size,
mtime, part size) for the life of the process."""

from __future__ import annotations

import hashlib
import math
import threading
from pathlib import Path

from cvtrain.storage.s3 import PART_SIZE

MiB = 1024 * 1024

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
