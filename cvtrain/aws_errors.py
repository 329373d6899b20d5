"""One line for any boto3/botocore failure, shared by storage and the Batch runner.

Never formats credentials: only the error class, the service's error code and the first
line of its message.
"""

from __future__ import annotations

AUTH_CODES = frozenset({
    "SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "AccessDeniedException",
    "ExpiredToken", "ExpiredTokenException", "InvalidToken", "InvalidClientTokenId",
    "UnrecognizedClientException", "AuthFailure", "UnauthorizedOperation", "403", "Forbidden",
    "AuthorizationHeaderMalformed", "TokenRefreshRequired", "AllAccessDisabled",
})
# the endpoint could not be connected to at all
_UNREACHABLE = ("EndpointConnectionError", "ConnectTimeoutError")
# it was connected to, then closed the connection or cut a response short: a live endpoint
# (or something between), not a wrong URL, so it is not worded as "cannot reach"
_DROPPED = ("ConnectionClosedError", "ResponseStreamingError", "IncompleteReadError",
            "ProtocolError", "ConnectionResetError", "BrokenPipeError")


def is_aws_error(exc: BaseException) -> bool:
    return (type(exc).__module__ or "").startswith(("botocore", "boto3", "s3transfer"))


def error_code(exc: BaseException) -> str:
    """The service's error code ("NoSuchBucket", ...) or the HTTP status, else ""."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    code = str((response.get("Error") or {}).get("Code") or "")
    if not code:
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        code = str(status) if status else ""
    return code


def describe_aws_error(exc: BaseException, what: str, credentials: str = "credentials",
                       endpoint: str = "the endpoint") -> str:
    """``what: <one line>``; ``credentials``/``endpoint`` name the thing in the wording."""
    name = type(exc).__name__
    code = error_code(exc)
    if code in AUTH_CODES:
        return f"{what}: access denied with the configured {credentials} ({code})"
    if name == "NoCredentialsError":
        return (f"{what}: no {credentials} found (environment: AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, a profile, or an instance role)")
    if name == "NoRegionError":
        return f"{what}: no AWS region configured (set AWS_REGION or a profile's region)"
    if name in ("PartialCredentialsError", "ProfileNotFound", "InvalidConfigError"):
        return f"{what}: bad AWS configuration ({name})"
    url = (getattr(exc, "kwargs", None) or {}).get("endpoint_url") or endpoint
    if name in _UNREACHABLE:
        return f"{what}: cannot reach {url} ({name})"
    if name in _DROPPED:
        return f"{what}: the connection to {url} was dropped ({name})"
    if name == "ReadTimeoutError":
        return f"{what}: no answer from {url} within the read timeout ({name})"
    if name == "InvalidEndpointURLError" or (name == "ValueError" and "endpoint" in str(exc)):
        return f"{what}: invalid endpoint URL"
    if code:
        response = getattr(exc, "response", None) or {}
        message = str((response.get("Error") or {}).get("Message") or "")
        message = message.splitlines()[0] if message else ""
        return f"{what}: {code}" + (f": {message}" if message else "")
    first = (str(exc).splitlines() or [""])[0]
    return f"{what}: {name}" + (f": {first}" if first else "")
