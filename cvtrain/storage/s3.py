"""S3 plumbing: URIs, one shared client per endpoint, listings and single reads; failures
and retries are in :mod:`cvtrain.storage.retries`.

boto3 (and obstore, :mod:`cvtrain.storage.objstore`) are imported inside functions only.
Endpoint and credentials come from boto3's own configuration (credential chain, profiles,
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``); ``endpoint_url`` overrides the endpoint.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from cvtrain.errors import StorageError, UsageError
from cvtrain.storage import retries
from cvtrain.storage.retries import describe, errors, is_missing, with_retries

SCHEME = "s3://"
#: parts of multipart transfers; also what a local file's multipart-style ETag is computed with
PART_SIZE = 8 * 1024 * 1024
#: threads moving files; the client's connection pool is sized for them plus multipart parts.
#: Small files are latency-bound (one request each): 32 in flight move ~770 files of 20 KB a
#: second at 25 ms a request where 16 move ~480 (benchmarks/README.md)
WORKERS = 32
#: parts of one multipart transfer in flight, and multipart files moving at once (the rest
#: wait), so that memory stays near LARGE_AT_ONCE * MULTIPART_CONCURRENCY parts whatever
#: the number of workers
MULTIPART_CONCURRENCY = 4
LARGE_AT_ONCE = 4



def is_s3(location: str | os.PathLike) -> bool:
    return isinstance(location, str) and location.startswith(SCHEME)


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str  # "" for the bucket root; may end with "/"

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        if not is_s3(uri):
            raise UsageError(f"{uri}: expected an s3://bucket/prefix URI")
        rest = uri[len(SCHEME):]
        bucket, _, key = rest.partition("/")
        if not bucket or any(c in bucket for c in " \\"):
            raise UsageError(f"{uri}: expected s3://bucket/prefix with a bucket name")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"

    def folder(self) -> S3Uri:
        """The same location read as a prefix: ends with "/" (or is the bucket root)."""
        if self.key and not self.key.endswith("/"):
            return S3Uri(self.bucket, self.key + "/")
        return self

    def child(self, *parts: str) -> S3Uri:
        key = self.folder().key + "/".join(p.strip("/") for p in parts if p)
        return S3Uri(self.bucket, key)

    @property
    def name(self) -> str:
        return PurePosixPath(self.key.rstrip("/")).name


def join(location: str, *parts: str) -> str:
    """``location/part/...`` for a local path or an s3 URI."""
    if is_s3(location):
        return str(S3Uri.parse(location).child(*parts))
    return os.path.join(location, *parts)


@dataclass
class Remote:
    """One endpoint: its boto3 client, the botocore session the client came from (its
    credential chain and settings, which obstore's stores share) and those stores by
    bucket (:mod:`cvtrain.storage.objstore`; None: boto3 only)."""

    client: object
    session: object
    stores: dict = field(default_factory=dict)


_clients: dict[str | None, Remote] = {}
_lock = threading.Lock()


def endpoint_override(endpoint_url: str | None) -> str | None:
    return (endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL") or None)


def client(endpoint_url: str | None = None):
    """The process-wide S3 client for this endpoint (boto3 clients are thread-safe)."""
    return remote(endpoint_url).client


def remote(endpoint_url: str | None = None) -> Remote:
    """The process-wide :class:`Remote` for this endpoint."""
    with _lock:
        if endpoint_url in _clients:
            return _clients[endpoint_url]
        try:
            import boto3
            import botocore.session
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - boto3 is a dependency
            raise StorageError("s3:// locations need boto3: pip install boto3") from exc
        options = {
            # legacy mode: "standard" shares one retry quota between all threads of the
            # client, and under sustained faults it runs dry (RetryQuotaReached after two
            # attempts) for every request at once; legacy retries each request on its own
            "retries": {"mode": "legacy", "total_max_attempts": retries.REQUEST_ATTEMPTS},
            "max_pool_connections": WORKERS + LARGE_AT_ONCE * MULTIPART_CONCURRENCY + 4,
            "connect_timeout": 10,
            "read_timeout": 120,
            "tcp_keepalive": True,
            **_checksum_options(Config),
        }
        if endpoint_override(endpoint_url):
            # S3-compatible services (MinIO, Ceph, moto, ...) rarely do virtual-host buckets
            options["s3"] = {"addressing_style": "path"}
        try:
            session = botocore.session.get_session()
            made = boto3.session.Session(botocore_session=session).client(
                "s3", endpoint_url=endpoint_url or None, config=Config(**options))
        except Exception as exc:
            raise StorageError(describe(exc, "s3 client")) from exc
        _clients[endpoint_url] = Remote(made, session)
        return _clients[endpoint_url]


def _checksum_options(config_class) -> dict:
    """Checksums only where S3 requires them (botocore >= 1.36 adds CRC32s to every upload
    and asks for them on downloads by default, which several S3-compatible stores refuse;
    single-part uploads carry Content-MD5 instead, see transfer.py). Older botocore does
    not know the options and already behaves so."""
    known = getattr(config_class, "OPTION_DEFAULTS", {})
    return {name: "when_required" for name in
            ("request_checksum_calculation", "response_checksum_validation") if name in known}


def transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                          max_concurrency=MULTIPART_CONCURRENCY, use_threads=True)


@dataclass(frozen=True)
class Obj:
    key: str
    size: int
    etag: str
    last_modified: object = None


def list_objects(uri: S3Uri, endpoint_url: str | None = None) -> list[Obj]:
    """Every object whose key starts with ``uri.key``, in key order. A folder (``uri.key``
    "" or ending with "/") is listed through obstore, continued after the last key received
    when a page fails; any other prefix, or a folder obstore cannot list exactly
    (:func:`cvtrain.storage.objstore.list_folder`), page by page through boto3, a failed
    page retried alone (1,000 keys a page either way)."""
    from cvtrain.storage import objstore

    where = remote(endpoint_url)
    found: list[Obj] = []

    def more() -> str:
        """Go on listing through obstore: "done", "boto3" (obstore cannot list it),
        "further" (it broke off after some keys: the next page gets its own attempts,
        as each page through boto3 does), or the error when it broke off at once."""
        after = found[-1].key if found else None
        try:
            listed = objstore.list_folder(where, uri.bucket, uri.key, after)
        except objstore.Partial as partial:
            found.extend(Obj(*item) for item in partial.found)
            if partial.found:
                return "further"
            raise partial.error from None
        if listed is None:
            return "boto3"
        found.extend(Obj(*item) for item in listed)
        return "done"

    with errors(str(uri)):
        while (state := with_retries(more, str(uri))) == "further":
            pass
        if state == "done":
            return found
        found.clear()  # boto3 lists from the start
        token = None
        while True:
            page = with_retries(lambda t=token: where.client.list_objects_v2(
                Bucket=uri.bucket, Prefix=uri.key, **({"ContinuationToken": t} if t else {})),
                str(uri))
            for item in page.get("Contents", ()):
                found.append(Obj(item["Key"], int(item["Size"]), item.get("ETag", "").strip('"'),
                                 item.get("LastModified")))
            if not page.get("IsTruncated") or not page.get("NextContinuationToken"):
                return found
            token = page["NextContinuationToken"]


def head(uri: S3Uri, endpoint_url: str | None = None) -> Obj | None:
    """The object at ``uri.key``, or None when there is none: a listing of one key from
    ``uri.key`` on (the key itself sorts first of those it prefixes) rather than a HEAD,
    whose errors come without a body, so without their reason (a 403 and no code)."""
    s3 = client(endpoint_url)
    with errors(str(uri)):
        page = with_retries(lambda: s3.list_objects_v2(Bucket=uri.bucket, Prefix=uri.key,
                                                       MaxKeys=1), str(uri))
    for item in page.get("Contents", ()):
        if item["Key"] == uri.key:
            return Obj(item["Key"], int(item["Size"]), item.get("ETag", "").strip('"'),
                       item.get("LastModified"))
    return None


def read_bytes(uri: S3Uri, endpoint_url: str | None = None) -> bytes | None:
    """The object's content, or None when there is no such key."""
    s3 = client(endpoint_url)
    with errors(str(uri)):
        try:
            return with_retries(
                lambda: s3.get_object(Bucket=uri.bucket, Key=uri.key)["Body"].read(), str(uri))
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
