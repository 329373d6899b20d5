"""One object copied between a local path and ``s3://`` (or two of either), each network
step retried on transient errors (:func:`cvtrain.storage.retries.with_retries`).

Objects under ``PART_SIZE`` move in one request through obstore
(:mod:`cvtrain.storage.objstore`, boto3 where it cannot), larger ones in parts through
boto3's s3transfer. Downloads land in a temporary file beside the target, renamed into
place once whole; a single-request download cut halfway continues with a Range request
from the bytes already written (``If-Match`` on the ETag, so a changed object restarts
cleanly) and its size is checked. Uploads are idempotent PUTs whose arrival is checked
(the ETag answered against the body's MD5, or Content-MD5 through boto3), retried whole.
:mod:`cvtrain.storage.transfer` runs many of these at once.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
import secrets
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cvtrain import stop
from cvtrain.aws_errors import error_code
from cvtrain.errors import StorageError
from cvtrain.storage import objstore, retries
from cvtrain.storage import s3 as s3mod
from cvtrain.storage.plan import PART_SUFFIX, Pair, Ref
from cvtrain.storage.s3 import PART_SIZE


def _temp_beside(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{PART_SUFFIX}")


#: how much of a download body is read (and written) at a time: a body cut halfway keeps
#: what arrived in whole blocks, and the next attempt asks only for the rest
READ_BLOCK = 64 * 1024


class _Incomplete(Exception):
    """A body that ended before the object's size; transient: the next attempt resumes."""

    transient = True


@dataclass
class _Partial:
    """A download in progress across attempts: bytes written to the temporary file so far,
    and the ETag and size of the object version they come from."""

    written: int = 0
    etag: str | None = None
    size: int | None = None

    def restart(self, fh) -> None:
        fh.seek(0)
        fh.truncate()
        self.written, self.etag, self.size = 0, None, None


def _get_rest(remote, src: Ref, fh, part: _Partial, advance) -> None:
    """One attempt at a single-request download: GET what is missing (all of it, or
    ``Range: bytes=N-`` with ``If-Match`` on the ETag of the bytes already written, so a
    changed object restarts cleanly) and append it to ``fh``; raise _Incomplete unless the
    file then holds exactly the object's size."""
    if part.size is not None and part.written == part.size:
        return
    ranged = bool(part.written)
    try:
        got = objstore.get_object(remote, src.bucket, src.key, offset=part.written,
                                  if_match=part.etag if ranged else None, block=READ_BLOCK)
    except Exception as exc:
        if part.written and error_code(exc) in ("PreconditionFailed", "412"):
            part.restart(fh)  # the object changed since the first bytes: start again
            raise _Incomplete(f"{src.label}: changed while being downloaded") from None
        raise
    if part.written and got.start != part.written:
        part.restart(fh)  # the server ignored the range and sends the whole object
    if not part.written:
        part.etag, part.size = got.etag, got.size
    for block in got.chunks:
        fh.write(block)
        part.written += len(block)
        advance(len(block))
    if part.written != part.size:
        raise _Incomplete(f"{src.label}: {part.written} of {part.size} bytes received")


def _download(remote, src: Ref, tmp: Path, advance) -> None:
    """A single-request download into ``tmp``, retried from where it stopped."""
    part = _Partial()
    with open(tmp, "wb") as fh:
        retries.with_retries(lambda: _get_rest(remote, src, fh, part, advance), src.label)


def _download_multipart(client, src: Ref, tmp: Path, advance) -> None:
    """A large object in parallel ranged GETs (s3transfer, which retries each part's body a
    few times itself); a failure retries the whole object; the size is checked after."""
    retries.with_retries(lambda: client.download_file(
        src.bucket, src.key, str(tmp), Config=s3mod.transfer_config(), Callback=advance),
        src.label)
    got = tmp.stat().st_size
    if src.size is not None and got != src.size:
        raise StorageError(f"{src.label}: {got} bytes received, {src.size} listed; it changed "
                           "while being copied, rerun to fetch it again")


def _upload(pair: Pair, remote, advance) -> None:
    """Put one object (or copy it between buckets), retried as a whole on transient errors:
    a PUT is idempotent and the object appears only once complete. A body damaged on the
    way does not go unnoticed: single-part uploads are signed with the body's SHA-256
    (which S3 checks), and the ETag answered must be the body's MD5, else boto3 sends it
    again with Content-MD5 (which the store checks)."""
    src, dst = pair.src, pair.dst
    size = src.size or 0
    client = remote.client
    if src.bucket is not None:
        retries.with_retries(lambda: client.copy({"Bucket": src.bucket, "Key": src.key},
                                               dst.bucket, dst.key,
                                               Config=s3mod.transfer_config()), src.label)
        advance(size)
        return
    extra = {}
    ctype = mimetypes.guess_type(src.path.name)[0]
    if ctype:
        extra["ContentType"] = ctype
    if size >= PART_SIZE:
        retries.with_retries(lambda: client.upload_file(
            str(src.path), dst.bucket, dst.key, ExtraArgs=extra or None,
            Config=s3mod.transfer_config(), Callback=advance), dst.label)
        return
    body = src.path.read_bytes()  # one consistent snapshot of a file being written
    digest = hashlib.md5(body, usedforsecurity=False).digest()
    md5 = base64.b64encode(digest).decode()
    retries.with_retries(lambda: objstore.put_object(remote, dst.bucket, dst.key, body, md5,
                                                   digest.hex(), ctype), dst.label)
    advance(len(body))


#: multipart transfers running at once (each with its own parts in flight)
_large = threading.BoundedSemaphore(s3mod.LARGE_AT_ONCE)


def copy(pair: Pair, endpoint_url: str | None, advance: Callable[[int], None]) -> None:
    """Copy one object, each network step retried on transient errors (retries.with_retries).
    Downloads land in a temporary file beside the target, renamed into place once whole.
    Objects of PART_SIZE and more wait for one of ``s3.LARGE_AT_ONCE`` places."""
    if (pair.src.size or 0) < PART_SIZE or (pair.src.bucket is None and pair.dst.bucket is None):
        _copy(pair, endpoint_url, advance)
        return
    with _large:
        if stop.requested():  # waited while a stop was asked for: do not start it
            raise stop.StopRequested(f"before copying {pair.src.label}")
        _copy(pair, endpoint_url, advance)


def _copy(pair: Pair, endpoint_url: str | None, advance: Callable[[int], None]) -> None:
    src, dst = pair.src, pair.dst
    if dst.bucket is not None:
        _upload(pair, s3mod.remote(endpoint_url), advance)
        return
    target = dst.path
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(target)
    try:
        if src.bucket is None:
            shutil.copyfile(src.path, tmp)
            advance(src.size or 0)
        elif (src.size or 0) >= PART_SIZE:
            _download_multipart(s3mod.client(endpoint_url), src, tmp, advance)
        else:
            _download(s3mod.remote(endpoint_url), src, tmp, advance)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
