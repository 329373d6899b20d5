"""S3 plumbing: URIs, one shared client per endpoint, listings, and errors in one line.

boto3 is imported inside functions only. Endpoint and credentials come from boto3's own
configuration (credential chain, profiles, ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``);
``endpoint_url`` overrides the endpoint. Credentials are never formatted into a message.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import PurePosixPath

from cvtrain.aws_errors import describe_aws_error, error_code, is_aws_error
from cvtrain.errors import StorageError, UsageError

SCHEME = "s3://"
#: parts of multipart transfers; also what a local file's multipart-style ETag is computed with
PART_SIZE = 8 * 1024 * 1024
#: threads moving files; the client's connection pool is sized for them plus multipart parts
WORKERS = 16
MULTIPART_CONCURRENCY = 4

# codes that mean "these credentials are not good for this": one clear line, no message text
# (AWS messages for signature errors can quote the string to sign)


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


_clients: dict[str | None, object] = {}
_lock = threading.Lock()


def endpoint_override(endpoint_url: str | None) -> str | None:
    return (endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL") or None)


def client(endpoint_url: str | None = None):
    """The process-wide S3 client for this endpoint (boto3 clients are thread-safe)."""
    with _lock:
        if endpoint_url in _clients:
            return _clients[endpoint_url]
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:  # pragma: no cover - boto3 is a dependency
            raise StorageError("s3:// locations need boto3: pip install boto3") from exc
        options = {
            "retries": {"max_attempts": 8, "mode": "standard"},
            "max_pool_connections": WORKERS + 2 * MULTIPART_CONCURRENCY + 4,
            "connect_timeout": 10,
            "read_timeout": 120,
            "tcp_keepalive": True,
        }
        if endpoint_override(endpoint_url):
            # S3-compatible services (MinIO, Ceph, moto, ...) rarely do virtual-host buckets
            options["s3"] = {"addressing_style": "path"}
        try:
            session = boto3.session.Session()
            made = session.client("s3", endpoint_url=endpoint_url or None,
                                  config=Config(**options))
        except Exception as exc:
            raise StorageError(_describe(exc, "s3 client")) from exc
        _clients[endpoint_url] = made
        return made


def transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
                          max_concurrency=MULTIPART_CONCURRENCY, use_threads=True)


def _describe(exc: BaseException, what: str) -> str:
    """One line for a boto3/botocore exception, never quoting credentials."""
    code = error_code(exc)
    if code == "NoSuchBucket":
        return f"{what}: no such bucket"
    if code in ("NoSuchKey", "404", "NotFound"):
        return f"{what}: no such key"
    return describe_aws_error(exc, what, endpoint="the S3 endpoint")


is_botocore_error = is_aws_error


@contextlib.contextmanager
def errors(what: str):
    """Turn boto3/botocore exceptions inside the block into a one-line StorageError."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        if is_botocore_error(exc) or isinstance(exc, ValueError) and "endpoint" in str(exc):
            raise StorageError(_describe(exc, what)) from None
        raise


def is_missing(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str((response.get("Error") or {}).get("Code") or "")
    return code in ("NoSuchKey", "404", "NotFound")


@dataclass(frozen=True)
class Obj:
    key: str
    size: int
    etag: str
    last_modified: object = None


def list_objects(uri: S3Uri, endpoint_url: str | None = None) -> list[Obj]:
    """Every object whose key starts with ``uri.key`` (paginated, 1,000 keys a page)."""
    s3 = client(endpoint_url)
    found: list[Obj] = []
    with errors(str(uri)):
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=uri.bucket, Prefix=uri.key):
            for item in page.get("Contents", ()):
                found.append(Obj(item["Key"], int(item["Size"]), item.get("ETag", "").strip('"'),
                                 item.get("LastModified")))
    return found


def read_bytes(uri: S3Uri, endpoint_url: str | None = None) -> bytes | None:
    """The object's content, or None when there is no such key."""
    s3 = client(endpoint_url)
    with errors(str(uri)):
        try:
            return s3.get_object(Bucket=uri.bucket, Key=uri.key)["Body"].read()
        except Exception as exc:
            if is_missing(exc):
                return None
            raise
