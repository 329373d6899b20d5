"""S3 plumbing: URIs, one shared client per endpoint, listings, and errors in one line.

boto3 (and obstore, :mod:`cvtrain.storage.objstore`) are imported inside functions only.
Endpoint and credentials come from boto3's own configuration (credential chain, profiles,
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``); ``endpoint_url`` overrides the endpoint.
Credentials are never formatted into a message. Transient failures (dropped connections,
5xx, throttling, cut bodies) are retried per call by :func:`with_retries`, on top of the
few retries per request of botocore or obstore.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TypeVar

from cvtrain import stop
from cvtrain.aws_errors import AUTH_CODES, describe_aws_error, error_code, is_aws_error
from cvtrain.errors import StorageError, UsageError

T = TypeVar("T")

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

#: botocore's and obstore's own attempts per HTTP request (first included). Kept small: it
#: only smooths over a single glitch; what makes a transfer survive a bad network is
#: :func:`with_retries` around each object and each listing page (bounded below), which
#: also continues a body cut halfway from the bytes written (botocore never does; obstore
#: does within its own few attempts, checking the ETag of what follows).
REQUEST_ATTEMPTS = 3
#: obstore's first wait before a request's retry (then doubling, at most 2 s), of the order
#: of botocore's legacy backoff
REQUEST_BACKOFF = 0.1
#: :func:`with_retries`: at most this many attempts, none started after this many seconds
#: (module constants: tests shorten them), waits of exponential backoff with full jitter
RETRY_ATTEMPTS = 8
RETRY_SECONDS = 60.0
BACKOFF_BASE = 0.25
BACKOFF_CAP = 10.0


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
            "retries": {"mode": "legacy", "total_max_attempts": REQUEST_ATTEMPTS},
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


def describe(exc: BaseException, what: str) -> str:
    """One line for a boto3/botocore exception, never quoting credentials."""
    if getattr(exc, "transient", False):
        return str(exc)  # our own (transfer.py), already one line naming the object
    if type(exc).__name__ in ("S3UploadFailedError", "RetriesExceededError"):
        # boto3's wrappers around what actually happened (a ClientError, a cut body)
        inner = getattr(exc, "last_exception", None) or exc.__cause__ or exc.__context__
        if inner is not None:
            return describe(inner, what)
    code = error_code(exc)
    if code == "NoSuchBucket":
        return f"{what}: no such bucket"
    if code in ("NoSuchKey", "404", "NotFound"):
        return f"{what}: no such key"
    return describe_aws_error(exc, what, endpoint="the S3 endpoint")


is_botocore_error = is_aws_error

# --------------------------------------------------------------------------- retries

#: service codes worth another attempt: the server's trouble or its asking us to slow down
TRANSIENT_CODES = frozenset({
    "500", "502", "503", "504", "429", "InternalError", "ServiceUnavailable", "SlowDown",
    "RequestTimeout", "RequestTimeoutException", "Throttling", "ThrottlingException",
    "ThrottledException", "RequestThrottled", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "BandwidthLimitExceeded",
    "ProvisionedThroughputExceededException", "PriorRequestNotComplete", "OperationAborted",
    # a multipart upload that vanished under a retried CompleteMultipartUpload: the whole
    # object is sent again
    "NoSuchUpload",
})
#: codes that no retry changes; the ones in FATAL_CODES hold for every object of a transfer
PERMANENT_CODES = AUTH_CODES | {"NoSuchBucket", "NoSuchKey", "404", "NotFound",
                                "InvalidBucketName", "InvalidRange", "PreconditionFailed"}
FATAL_CODES = AUTH_CODES | {"NoSuchBucket", "InvalidBucketName"}
_TRANSIENT_NAMES = frozenset({
    # botocore: connection refused/reset/closed, timeouts, a body cut while being read
    "ConnectionError", "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError",
    "ConnectTimeoutError", "HTTPClientError", "IncompleteReadError", "ResponseStreamingError",
    # urllib3 underneath, and s3transfer's "a part's retries ran out" (boto3 re-raises it)
    "ProtocolError", "NewConnectionError", "RetriesExceededError",
})


def _chain(exc: BaseException):
    """The exception, its causes and contexts, and what s3transfer wrapped in it."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        context = None if e.__suppress_context__ else e.__context__  # "from None" ends it
        todo += [e.__cause__, context, getattr(e, "last_exception", None)]


def is_transient(exc: BaseException) -> bool:
    """True when another attempt may well succeed: dropped or refused connections, timeouts,
    bodies cut halfway, 5xx, throttling. False for anything a retry cannot change (access
    denied, no such bucket or key, a local disk error), checked first along the chain."""
    chain = list(_chain(exc))
    if any(error_code(e) in PERMANENT_CODES for e in chain):
        return False
    for e in chain:
        if getattr(e, "transient", False):
            return True
        if error_code(e) in TRANSIENT_CODES or _status(e) >= 500:
            return True
        names = {c.__name__ for c in type(e).__mro__}
        if "SSLError" in names and "certificate" in str(e).lower():
            return False
        if names & _TRANSIENT_NAMES or isinstance(e, ConnectionError | TimeoutError):
            return True
    return False


def _status(exc: BaseException) -> int:
    """The HTTP status of a service error's response, else 0."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return 0
    return int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)


def is_fatal(exc: BaseException) -> bool:
    """True when the error holds for every object of the transfer (credentials, bucket)."""
    return any(error_code(e) in FATAL_CODES for e in _chain(exc))


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...): exponential
    backoff with full jitter (uniform in [0, min(cap, base * 2**(attempt-1))]), so that many
    threads hit by one outage do not come back in step."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))


def with_retries(fn: Callable[[], T], what: str) -> T:
    """``fn()``, called again after a transient error (:func:`is_transient`) until it
    succeeds, RETRY_ATTEMPTS attempts were made, or the next one would start more than
    RETRY_SECONDS after the first. Permanent errors are raised as they are; exhausted
    transient ones as one StorageError line saying how many attempts were made. A stop
    request (:mod:`cvtrain.stop`) ends a backoff wait and raises StopRequested: between
    attempts nothing is half-done."""
    t0 = time.monotonic()
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            delay = backoff(attempt)
            if attempt >= RETRY_ATTEMPTS or time.monotonic() + delay - t0 > RETRY_SECONDS:
                tries = f"{attempt} attempt" + ("s" if attempt > 1 else "")
                raise StorageError(f"{describe(exc, what)}; gave up after {tries} in "
                                   f"{time.monotonic() - t0:.0f} s") from None
            if stop.sleep(delay):
                raise stop.StopRequested(f"while waiting to retry {what}") from None
            attempt += 1


@contextlib.contextmanager
def errors(what: str):
    """Turn boto3/botocore exceptions inside the block into a one-line StorageError."""
    try:
        yield
    except StorageError:
        raise
    except Exception as exc:
        if is_botocore_error(exc) or isinstance(exc, ValueError) and "endpoint" in str(exc):
            raise StorageError(describe(exc, what)) from None
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
