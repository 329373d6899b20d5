"""Small objects without botocore's per-request machinery.

A boto3 ``put_object`` or ``get_object`` costs about 3 ms of CPU (parameter validation,
serialisation, some twenty event handlers, response parsing), which caps one Python process
near 300 small objects a second whatever the network. For the one-request GETs and PUTs of
files under ``s3.PART_SIZE`` this module builds the request itself, signs it with botocore's
own SigV4 signer and the client's own credentials, and sends it over the client's own
connection pool (its proxies, CA bundle and timeouts): about 1 ms a request.

It never changes what a request means, and never decides alone that one failed: a
permanent error from the lean path (anything :func:`cvtrain.storage.s3.is_transient`
rejects: 403, 404, 301, 400, ..., except a 412 or 416 answering an ``If-Match`` or a
``Range``) is asked again through the boto3 client, whose answer stands. If the client
succeeds where the lean request did not (a bucket in another region, an addressing style a
store wants, a signing setting this module does not follow), the lean path is switched off
for that bucket, for the rest of the process. Transient errors (5xx, dropped connections,
bodies cut halfway) are raised as they are, for the caller's retries. Listings
(ListObjectsV2) take the same path: boto3 parses a page of 1,000 keys in about 100 ms of
CPU (every date through dateutil), ElementTree in a few.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit
from xml.etree import ElementTree

from cvtrain.storage import s3 as s3mod

#: off for (client, bucket) pairs where the client succeeded after a lean request failed
_off: set[tuple[int, str]] = set()
_lock = threading.Lock()
#: answers to what a request asked (If-Match, Range), not failures of the lean path
_ANSWERS = frozenset({"PreconditionFailed", "InvalidRange"})
_DNS_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


class CutBody(Exception):
    """A response body that ended (or broke) before its length; transient."""

    transient = True


@dataclass
class _Target:
    url: str
    credentials: object
    region: str
    session: object


def _target(client, bucket: str, key: str, query: str = "") -> _Target | None:
    """Where a lean request for ``bucket/key`` (``key`` "" for the bucket itself, with its
    ``query`` already in canonical form) goes, or None where it should not be tried."""
    if (id(client), bucket) in _off:
        return None
    try:
        meta = client.meta
        config = meta.config
        signer = client._request_signer
        session = client._endpoint.http_session
        credentials = signer._credentials
    except AttributeError:  # a botocore without these: the client does everything
        return None
    s3_config = config.s3 or {}
    if (credentials is None or config.signature_version not in (None, "s3v4", "v4")
            or s3_config.get("use_accelerate_endpoint") or s3_config.get("use_arn_region")
            or config.proxies_config or not meta.endpoint_url):
        return None
    parts = urlsplit(meta.endpoint_url)
    base = parts.path.rstrip("/")
    path = quote(key, safe="/~")
    style = s3_config.get("addressing_style") or "auto"
    if style != "path" and _DNS_BUCKET.fullmatch(bucket) and "--" not in bucket:
        netloc, path = f"{bucket}.{parts.netloc}", f"{base}/{path}"
    elif style == "virtual":
        return None  # a bucket name that cannot be a host name: botocore knows what to do
    else:
        netloc = parts.netloc
        path = f"{base}/{quote(bucket, safe='')}" + (f"/{path}" if key else "")
    url = urlunsplit((parts.scheme, netloc, path, query, ""))
    return _Target(url, credentials, meta.region_name or "us-east-1", session)


def _send(target: _Target, method: str, operation: str, headers: dict,
          body: bytes | None = None, stream: bool = False):
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(method=method, url=target.url, headers=headers, data=body,
                         stream_output=stream)
    S3SigV4Auth(target.credentials.get_frozen_credentials(), "s3",
                target.region).add_auth(request)
    response = target.session.send(request.prepare())
    if response.status_code >= 300:
        raise _client_error(response, operation)
    return response


def _client_error(response, operation: str):
    """The same ClientError boto3 would raise for this answer (code, message, status)."""
    from botocore.exceptions import ClientError

    status = response.status_code
    code, message = str(status), ""
    try:
        content = response.content  # reads a streamed error body too (it is small)
        root = ElementTree.fromstring(content) if content else None
        if root is not None and root.tag == "Error":
            code = root.findtext("Code") or code
            message = root.findtext("Message") or ""
    except Exception:  # not XML (a proxy's page): the status says enough
        pass
    if code == "412":
        code = "PreconditionFailed"
    parsed = {"Error": {"Code": code, "Message": message},
              "ResponseMetadata": {"HTTPStatusCode": status,
                                   "HTTPHeaders": dict(response.headers.items())}}
    return ClientError(parsed, operation)


def _fallback(client, bucket: str, exc: Exception, call):
    """A permanent error from the lean path: ``call()`` through the client decides. Its
    success switches the lean path off for this bucket; its error is raised instead."""
    if s3mod.is_transient(exc) or s3mod.error_code(exc) in _ANSWERS:
        raise exc
    result = call()
    with _lock:
        _off.add((id(client), bucket))
    return result


def put_object(client, bucket: str, key: str, body: bytes, md5: str,
               content_type: str | None = None) -> None:
    """PUT a small object (``md5``: its base64 Content-MD5)."""
    headers = {"Content-MD5": md5}
    if content_type:
        headers["Content-Type"] = content_type

    def boto():
        extra = {"ContentType": content_type} if content_type else {}
        client.put_object(Bucket=bucket, Key=key, Body=body, ContentMD5=md5, **extra)

    target = _target(client, bucket, key)
    if target is None:
        return boto()
    try:
        _send(target, "PUT", "PutObject", headers, body)
    except Exception as exc:
        _fallback(client, bucket, exc, boto)


class _Body:
    """A streamed response body read in blocks; breaks become :class:`CutBody`."""

    def __init__(self, raw, label: str):
        self.raw, self.label = raw, label

    def iter_chunks(self, size: int):
        done = False
        try:
            while True:
                block = self.raw.read(size)
                if not block:
                    done = True
                    return
                yield block
        except Exception as exc:
            raise CutBody(f"{self.label}: the download was cut ({type(exc).__name__})") from exc
        finally:
            if done:
                self.raw.release_conn()
            else:
                self.raw.close()  # never hand a half-read connection back to the pool


def get_object(client, bucket: str, key: str, range_: str | None = None,
               if_match: str | None = None) -> dict:
    """GET a small object: a dict with the fields of boto3's answer that transfers use
    (``ETag``, ``ContentLength``, ``ContentRange`` when ranged, ``Body.iter_chunks``)."""
    headers = _given({"Range": range_, "If-Match": if_match})

    def boto():
        return client.get_object(Bucket=bucket, Key=key,
                                 **_given({"Range": range_, "IfMatch": if_match}))

    target = _target(client, bucket, key)
    if target is None:
        return boto()
    try:
        response = _send(target, "GET", "GetObject", headers, stream=True)
    except Exception as exc:
        return _fallback(client, bucket, exc, boto)
    h = response.headers
    answer = {"ETag": h.get("ETag"), "ContentLength": int(h.get("Content-Length", 0)),
              "Body": _Body(response.raw, f"s3://{bucket}/{key}")}
    if h.get("Content-Range"):
        answer["ContentRange"] = h["Content-Range"]
    return answer


def _given(fields: dict) -> dict:
    """The fields that have a value (request options left out when not asked for)."""
    return {k: v for k, v in fields.items() if v}


def _canonical_query(params: dict[str, str]) -> str:
    """A query string as SigV4 signs it: sorted, RFC 3986 encoded."""
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
                    for k, v in sorted(params.items()))


def list_objects_v2(client, bucket: str, prefix: str, token: str | None = None) -> dict:
    """One ListObjectsV2 page (keys URL-encoded on the wire, as boto3 asks for them): a
    dict with the fields of boto3's answer that listings use (``Contents`` with ``Key``,
    ``Size``, ``ETag``, ``LastModified`` as sent; ``IsTruncated``,
    ``NextContinuationToken``). Parsing 1,000 keys takes a few ms here, where boto3's
    parser (dates through dateutil) takes about 100."""
    params = _given({"list-type": "2", "prefix": prefix, "encoding-type": "url",
                     "continuation-token": token})

    def boto():
        return client.list_objects_v2(Bucket=bucket, Prefix=prefix,
                                      **_given({"ContinuationToken": token}))

    target = _target(client, bucket, "", _canonical_query(params))
    if target is None:
        return boto()
    try:
        response = _send(target, "GET", "ListObjectsV2", {})
        root = ElementTree.fromstring(response.content)
    except ElementTree.ParseError as exc:
        raise CutBody(f"s3://{bucket}/{prefix}: a listing that is not XML ({exc})") from None
    except Exception as exc:
        return _fallback(client, bucket, exc, boto)
    return _parse_listing(root)


def _parse_listing(root) -> dict:
    ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    decode = unquote_plus if root.findtext(f"{ns}EncodingType") == "url" else (lambda k: k)
    contents = [{"Key": decode(item.findtext(f"{ns}Key")),
                 "Size": int(item.findtext(f"{ns}Size") or 0),
                 "ETag": item.findtext(f"{ns}ETag") or "",
                 "LastModified": item.findtext(f"{ns}LastModified")}
                for item in root.iterfind(f"{ns}Contents")]
    page = {"Contents": contents,
            "IsTruncated": (root.findtext(f"{ns}IsTruncated") or "").lower() == "true"}
    token = root.findtext(f"{ns}NextContinuationToken")
    if token:
        page["NextContinuationToken"] = token
    return page
