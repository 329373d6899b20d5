"""Small objects and folder listings through obstore, the Python binding of Rust's
``object_store``; boto3 for everything else and as the judge of any answer obstore gets
that is not plainly transient.

Why: a boto3 ``put_object`` or ``get_object`` costs about 3 ms of the client's CPU
(parameter validation, serialisation, event handlers, response parsing, under the GIL),
which caps one process near 300 small objects a second whatever the network; a listing
page of 1,000 keys costs about 100 ms of parsing. obstore signs, sends and parses in Rust,
outside the GIL (benchmarks/README.md has the figures).

What goes through obstore: single-request GETs and PUTs of objects under ``s3.PART_SIZE``
and listings of folder prefixes. Multipart transfers, copies between buckets, deletes,
HEADs and listings of other prefixes stay on boto3 (s3transfer).

One store per (endpoint, bucket), configured from the boto3 client's own resolved
configuration, so both go to the same place with the same identity: ``meta.endpoint_url``
(``--endpoint-url``, ``AWS_ENDPOINT_URL[_S3]``, a profile's ``endpoint_url``), region,
addressing style, timeouts, CA bundle, and credentials from boto3's chain (profiles, SSO,
roles, instance metadata) through obstore's ``Boto3CredentialProvider``. Where the client
is configured in a way this does not carry over (another signature version, accelerate,
dual-stack or FIPS endpoints, proxies or a client certificate in the config, no
credentials), boto3 does everything. No checksum option is set: object_store sends no
CRC32 trailers (several S3-compatible stores refuse them); the body's SHA-256 is part of
the signature (``x-amz-content-sha256``), and the ETag a PUT answers is compared with the
body's MD5 (see :func:`put_object`).

Answers: transient failures (5xx, throttling, dropped connections, bodies cut halfway) are
raised as :class:`RemoteError` / :class:`Dropped` for ``retries.with_retries``; the answers to
``If-Match`` and ``Range`` (412, 416) as :class:`RemoteError` too. Anything else (403,
404, 301, 400, ...) is asked again through boto3, whose answer stands; where boto3 then
succeeds (a bucket in another region, a store that wants something else), obstore is
switched off for that bucket for the rest of the process.

Keys: object_store refuses some keys (``.``, ``..`` or empty segments, control
characters) and silently drops a leading or trailing ``/`` of others (``/x/f`` would be
written as ``x/f``, a folder marker ``m/`` listed as ``m``). Such keys go through boto3
(:func:`nameable`), and a listing is redone through boto3 where it could have met one: any
empty object in it (a marker reads as one), or keys that start with ``/`` at the bucket root.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

from cvtrain.storage import retries

#: S3 codes that answer what a request asked (If-Match, Range), not failures
ANSWERS = frozenset({"PreconditionFailed", "InvalidRange"})
_DNS_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
# object_store's error text: "... Server returned non-2xx status code: 503 Service
# Unavailable: <?xml ...><Code>SlowDown</Code><Message>...</Message>..."
_STATUS = re.compile(r"status code: (\d{3})")
_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_MESSAGE = re.compile(r"<Message>([^<]{0,300})</Message>")
# ... and for a request that got no answer, or a body that broke off
_NETWORK = ("error sending request", "body error", "connection", "timed out", "timeout",
            "Interrupted", "IncompleteBody", "reset by peer", "broken pipe")
_lock = threading.Lock()


class RemoteError(Exception):
    """An S3 error answered to an obstore request, shaped like botocore's ClientError
    (``response``) so that :mod:`cvtrain.storage.s3` classifies and words it the same."""

    def __init__(self, code: str, message: str, status: int):
        super().__init__(f"{code}: {message}" if message else code)
        self.response = {"Error": {"Code": code, "Message": message},
                         "ResponseMetadata": {"HTTPStatusCode": status}}


class Dropped(Exception):
    """No answer (connection refused, dropped, timed out) or a body cut halfway;
    transient. Its text is one line naming the object."""

    transient = True


@dataclass
class Got:
    """A GET's answer: the object's ETag and whole size, where this body starts in it
    (``offset`` when the server honoured the range, else 0), and the body in blocks."""

    etag: str | None
    size: int
    start: int
    chunks: Iterator


# --------------------------------------------------------------------------- stores

def _store(remote, bucket: str):
    """The obstore store for ``bucket`` on this remote (s3.Remote), or None: boto3 only."""
    with _lock:
        if bucket not in remote.stores:
            try:
                remote.stores[bucket] = _make_store(remote, bucket)
            except Exception:  # obstore missing or refusing this configuration: boto3
                remote.stores[bucket] = None
        return remote.stores[bucket]


def _make_store(remote, bucket: str):
    meta = remote.client.meta
    config = meta.config
    s3_config = config.s3 or {}
    if (config.signature_version not in (None, "s3v4", "v4") or config.proxies
            or config.client_cert or config.use_dualstack_endpoint or config.use_fips_endpoint
            or any(s3_config.get(k) for k in ("use_accelerate_endpoint", "use_arn_region",
                                               "use_dualstack_endpoint"))
            or not meta.endpoint_url or remote.session.get_credentials() is None):
        return None
    from obstore.auth.boto3 import Boto3CredentialProvider
    from obstore.store import S3Store

    parts = urlsplit(meta.endpoint_url)
    # the addressing style botocore picks: virtual host for a bucket name that can be a
    # host name (no dots: TLS certificates cover one level) unless configured otherwise or
    # the endpoint is an IP address; tests/test_storage_objstore.py compares the outcome
    # with boto3's own requests
    style = s3_config.get("addressing_style") or "auto"
    virtual = (style != "path" and bool(_DNS_BUCKET.fullmatch(bucket)) and "--" not in bucket
               and not _is_ip(parts.hostname or ""))
    if style == "virtual" and not virtual:
        return None  # a bucket name that cannot be a host name: botocore knows what to do
    endpoint = meta.endpoint_url.rstrip("/")
    if virtual:
        endpoint = urlunsplit((parts.scheme, f"{bucket}.{parts.netloc}", parts.path.rstrip("/"),
                               "", ""))
    client_options = {
        "allow_http": parts.scheme == "http",
        "connect_timeout": timedelta(seconds=config.connect_timeout or 10),
        "read_timeout": timedelta(seconds=config.read_timeout or 120),
        # the whole request, body included: generous, as the read timeout catches stalls
        "timeout": timedelta(minutes=10),
    }
    ca_bundle = remote.session.get_config_variable("ca_bundle")
    if ca_bundle and parts.scheme == "https":
        with open(ca_bundle, "rb") as fh:
            client_options["root_certificate"] = fh.read()
    # obstore's own retries play botocore's part (retries.REQUEST_ATTEMPTS per request, a short
    # backoff); retries.with_retries around each object makes a transfer survive a bad network
    retry = {"max_retries": retries.REQUEST_ATTEMPTS - 1,
             "retry_timeout": timedelta(seconds=retries.RETRY_SECONDS),
             "backoff": {"init_backoff": timedelta(seconds=retries.REQUEST_BACKOFF),
                         "max_backoff": timedelta(seconds=2), "base": 2}}
    return S3Store(
        bucket, endpoint=endpoint, region=meta.region_name or "us-east-1",
        virtual_hosted_style_request=bool(virtual),
        # explicit, whatever AWS_* variables object_store would read: signed payloads,
        # signed requests, no requester-pays, no S3 Express
        unsigned_payload=False, skip_signature=False, request_payer=False, s3_express=False,
        client_options=client_options, retry_config=retry,
        # credentials a little ahead of botocore's refresh (15 minutes before expiry)
        credential_provider=Boto3CredentialProvider(remote.session,
                                                    ttl=timedelta(minutes=5)))


def _is_ip(host: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _switch_off(remote, bucket: str) -> None:
    with _lock:
        remote.stores[bucket] = None


# --------------------------------------------------------------------------- answers

def _error(exc: BaseException, label: str, endpoint: str) -> Exception | None:
    """What an obstore exception means: a RemoteError (an S3 error with its code), a
    Dropped (no answer, or a body cut halfway), or None when it is neither transient nor
    an answer (boto3 is asked instead)."""
    text = str(exc)
    found = _STATUS.search(text)
    if found:
        status = int(found[1])
        code = _CODE.search(text)
        message = _MESSAGE.search(text)
        code = code[1] if code else {412: "PreconditionFailed", 416: "InvalidRange"}.get(
            status, str(status))
        error = RemoteError(code, message[1] if message else "", status)
        return error if retries.is_transient(error) or code in ANSWERS else None
    if isinstance(exc, ValueError | FileNotFoundError | PermissionError):
        return None
    if any(word.lower() in text.lower() for word in _NETWORK):
        first = text.split(" - ", 1)[-1].splitlines()[0] if text else type(exc).__name__
        return Dropped(f"{label}: the connection to {endpoint} was dropped ({first})")
    return None


def nameable(key: str) -> bool:
    """Whether object_store names ``key`` exactly as it is (see the module's docstring);
    the keys it would refuse outright are found by trying."""
    return bool(key) and not key.startswith("/") and not key.endswith("/")


def _through(remote, bucket: str, key: str, fast: Callable, slow: Callable):
    """``fast(store)`` through obstore; ``slow()`` (boto3) where there is no store or the
    key is not :func:`nameable`, or where obstore got an answer that is neither transient
    nor asked for: boto3's result or error stands, and its success switches obstore off
    for the bucket."""
    store = _store(remote, bucket)
    if store is None or not nameable(key):
        return slow()
    label = f"s3://{bucket}/{key}"
    try:
        return fast(store)
    except Exception as exc:
        error = _error(exc, label, remote.client.meta.endpoint_url)
        if error is not None:
            raise error from None
        if _unnamed(exc):  # a key object_store cannot name: boto3, for this request only
            return slow()
    result = slow()
    _switch_off(remote, bucket)
    return result


def _unnamed(exc: BaseException) -> bool:
    """Refused before sending: a key with ".", ".." or empty segments."""
    name = type(exc).__name__
    return name == "InvalidPathError" or (isinstance(exc, ValueError) and "path" in str(exc))


# --------------------------------------------------------------------------- requests

def put_object(remote, bucket: str, key: str, body: bytes, md5: str, md5_hex: str,
               content_type: str | None = None) -> None:
    """PUT a small object (``md5``: its base64 Content-MD5, sent by boto3 only;
    ``md5_hex``: the same digest in hex). The ETag answered is the MD5 of what the store
    received on S3 and every S3-compatible store we know (except encrypted ones, SSE-KMS
    or SSE-C): a different one is asked again through boto3, with Content-MD5, whose
    success switches obstore off for the bucket."""
    label = f"s3://{bucket}/{key}"

    def slow():
        extra = {"ContentType": content_type} if content_type else {}
        remote.client.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=md5, **extra)

    def fast(store):
        import obstore

        answer = obstore.put(store, key, body, use_multipart=False,
                             attributes={"Content-Type": content_type} if content_type else None)
        etag = (answer.get("e_tag") or "").strip('"')
        if etag and etag != md5_hex:
            raise _Unverified(f"{label}: ETag {etag} is not the MD5 of what was sent")

    _through(remote, bucket, key, fast, slow)


class _Unverified(Exception):
    """A PUT whose answer does not show the body arrived whole; boto3 is asked."""


def get_object(remote, bucket: str, key: str, offset: int = 0,
               if_match: str | None = None, block: int = 64 * 1024) -> Got:
    """GET a small object, from byte ``offset`` (``Range: bytes=offset-``) and only if its
    ETag is still ``if_match`` when given. A body that breaks off raises Dropped from the
    iteration of ``chunks``."""
    label = f"s3://{bucket}/{key}"
    endpoint = remote.client.meta.endpoint_url

    def fast(store):
        import obstore

        options = {}
        if offset:
            options["range"] = {"offset": offset}
        if if_match:
            options["if_match"] = if_match
        result = obstore.get(store, key, options=options or None)
        meta = result.meta
        return Got(meta.get("e_tag"), int(meta["size"]), result.range[0],
                   _chunks(result.stream(min_chunk_size=block), label, endpoint))

    def slow():
        extra = {}
        if offset:
            extra["Range"] = f"bytes={offset}-"
        if if_match:
            extra["IfMatch"] = if_match
        answer = remote.client.get_object(Bucket=bucket, Key=key, **extra)
        size, start = int(answer["ContentLength"]), 0
        if answer.get("ContentRange"):  # "bytes 100-999/1000"
            span, _, whole = answer["ContentRange"].partition("/")
            start, size = int(span.split()[-1].split("-")[0]), int(whole)
        return Got(answer.get("ETag"), size, start, answer["Body"].iter_chunks(block))

    return _through(remote, bucket, key, fast, slow)


def _chunks(stream, label: str, endpoint: str) -> Iterator:
    try:
        yield from stream
    except Exception as exc:
        error = _error(exc, label, endpoint)
        raise (error or Dropped(f"{label}: the download was cut ({type(exc).__name__})")) \
            from None


def list_folder(remote, bucket: str, prefix: str, after: str | None = None) -> list | None:
    """``(key, size, etag, last_modified)`` of every object under ``prefix`` ("" or a
    folder ending with "/"), in key order, starting after key ``after``; None where
    obstore cannot list it exactly (no store, a key it cannot name or might rename, an
    answer it does not expect): boto3 lists it then. object_store asks ListObjectsV2 for
    ``prefix`` with its trailing "/" and parses the pages in Rust (a few ms a page, where
    boto3 takes about 100)."""
    store = _store(remote, bucket)
    if store is None or (prefix and (not nameable(prefix[:-1]) or prefix[-1] != "/")):
        return None
    if not prefix and after is None and _starts_with_slash(remote, bucket):
        return None
    import obstore

    label = f"s3://{bucket}/{prefix}"
    found: list = []
    try:
        for batch in obstore.list(store, prefix[:-1] or None, offset=after, chunk_size=1000):
            for m in batch:
                if not m["size"]:  # perhaps a folder marker "name/" listed as "name"
                    return None
                found.append((m["path"], int(m["size"]), (m.get("e_tag") or "").strip('"'),
                              m.get("last_modified")))
    except Exception as exc:
        error = _error(exc, label, remote.client.meta.endpoint_url)
        if error is not None:
            raise Partial(error, found) from None
        return None
    return found


def _starts_with_slash(remote, bucket: str) -> bool:
    """Whether any key of the bucket starts with "/" (object_store would list it
    without): one ListObjectsV2 of one key, through boto3."""
    page = remote.client.list_objects_v2(Bucket=bucket, Prefix="/", MaxKeys=1)
    return bool(page.get("Contents"))


class Partial(Exception):
    """A listing that broke off: the transient error and the keys received before it."""

    def __init__(self, error: Exception, found: list):
        super().__init__(str(error))
        self.error, self.found = error, found
