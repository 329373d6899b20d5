"""Failures of S3 requests: one line for any of them (:func:`describe`, :func:`errors`),
which ones another attempt may mend (:func:`is_transient`) or that hold for a whole
transfer (:func:`is_fatal`), and the retries around each object and listing page
(:func:`with_retries`), on top of the few retries per request of botocore or obstore.
Credentials are never formatted into a message.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from typing import TypeVar

from cvtrain import stop
from cvtrain.aws_errors import AUTH_CODES, describe_aws_error, error_code, is_aws_error
from cvtrain.errors import StorageError

T = TypeVar("T")

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
