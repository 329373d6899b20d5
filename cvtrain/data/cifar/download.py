"""Downloading the official CIFAR-100 archives into the cache (:func:`cvtrain.paths.cache_dir`).

An archive is streamed into a ``.part`` file in the cache, MD5-checked, and only then moved
to its final name, so the cache never holds a partial or corrupt archive.
:data:`DOWNLOADS` and :data:`DOWNLOAD_TIMEOUT` are read when a download starts, so tests
can monkeypatch them in this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

from cvtrain.console import byte_progress
from cvtrain.data.cifar.format import ARCHIVE_NAMES, EDITIONS
from cvtrain.data.errors import _error, _one_line, _reason
from cvtrain.errors import DEMO_HINT, DataError, typed_set
from cvtrain.paths import cache_dir

#: Official download locations; tests monkeypatch the entries.
DOWNLOADS: dict[str, dict[str, str]] = {
    "binary": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        "md5": "03b5dce01913d631647c71ecec9e9cb8",
    },
    "python": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
    },
}
DOWNLOAD_TIMEOUT = 60.0  # seconds, per socket operation


class _LocalCopy:
    """The fix for CIFAR-100 that cannot be had here, as something to type (read when the
    message is made: the make target is the process's)."""

    def __str__(self) -> str:
        return (f"set data.path to a local copy with "
                f"{typed_set('data.path=FILE', 'cifar100')} (an archive such as "
                f"{ARCHIVE_NAMES['binary']}, or its folder), or {DEMO_HINT}")


LOCAL_COPY = _LocalCopy()


def _fetch(url: str, out: BinaryIO, progress: bool, label: str) -> tuple[str, int]:
    """Stream ``url`` into ``out``; returns (md5 hex digest, bytes received)."""
    request = urllib.request.Request(url, headers={"User-Agent": "cvtrain"})
    md5 = hashlib.md5(usedforsecurity=False)
    received = 0
    with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
        length = response.headers.get("Content-Length", "")
        total = int(length) if length.strip().isdigit() else None
        with byte_progress(progress, total, label, terminal_only=False) as advance:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                md5.update(chunk)
                received += len(chunk)
                advance(len(chunk))
    if total is not None and received != total:
        raise http.client.IncompleteRead(b"", total - received)
    return md5.hexdigest(), received


def _download(edition: str, cache: Path, progress: bool) -> Path:
    info = DOWNLOADS[edition]
    url, expected_md5 = info["url"], info["md5"].lower()
    target = cache / ARCHIVE_NAMES[edition]

    def failed(reason: str) -> DataError:
        return _error(
            f"no CIFAR-100 archive in {cache} and downloading {url} failed: {reason}; "
            f"{LOCAL_COPY}"
        )

    part: Path | None = None
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"{target.name}.", suffix=".part", dir=cache)
        part = Path(name)
        with os.fdopen(fd, "wb") as out:
            digest, size = _fetch(url, out, progress, f"downloading {target.name}")
        if digest != expected_md5:
            raise failed(
                f"MD5 checksum mismatch (expected {expected_md5}, got {digest} for {size:,} bytes)"
            )
        os.chmod(part, 0o644)
        os.replace(part, target)
        part = None
        return target
    except DataError:
        raise
    except urllib.error.HTTPError as exc:
        raise failed(f"HTTP {exc.code} {_one_line(str(exc.reason), 100)}") from exc
    except urllib.error.URLError as exc:
        raise failed(_one_line(str(exc.reason), 200)) from exc
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise failed(_reason(exc)) from exc
    finally:
        if part is not None:
            with contextlib.suppress(OSError):
                part.unlink()


def _from_cache(edition: str, download: bool, progress: bool) -> Path:
    cache = cache_dir()
    order = EDITIONS if edition == "auto" else (edition,)
    for ed in order:
        archive = cache / ARCHIVE_NAMES[ed]
        if archive.is_file():
            return archive
    if not download:
        names = " or ".join(ARCHIVE_NAMES[ed] for ed in order)
        raise _error(
            f"no CIFAR-100 archive in {cache} (expected {names}) and downloading is off; "
            f"{LOCAL_COPY}"
        )
    return _download(order[0], cache, progress)
