"""What a job role's own IAM policies let a Batch job do with S3, decided before submitting.

The submitter's credentials are not the job's: the stack's job role (``infra/cvtrain.yaml``)
reads only ``datasets/*`` and writes only ``runs/*`` of its bucket, and a URI outside them
would fail with AccessDenied after the instance booted and pulled the image. This module
evaluates the role's identity policies (inline and attached) the way IAM does for one
action on one resource: an explicit Deny wins, else an Allow grants, else it is not granted.
Wildcards (``*``, ``?``) in actions and resources are honoured, and the condition operators a
bucket-prefix policy uses (``StringEquals``, ``StringLike`` and their ``Not`` and
``IfExists`` forms) are evaluated against the request's keys (``s3:prefix``); a statement
with any other condition makes the answer "unknown", which is never refused. Bucket
policies, permission boundaries and SCPs are not seen (they can only take away): what
passes here can still be denied there, what fails here fails on AWS. Pure: the policies
come from :func:`cvtrain.cloud.preflight.role_policy_documents`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

ALLOWED, DENIED, NOT_GRANTED, UNKNOWN = "allowed", "denied", "not granted", "unknown"

_OPERATORS = {"StringEquals": (False, False), "StringLike": (True, False),
              "StringNotEquals": (False, True), "StringNotLike": (True, True)}


def _list(value) -> list:
    return value if isinstance(value, list) else [] if value is None else [value]


def _wild(pattern: str, value: str, case: bool = True) -> bool:
    """IAM wildcard match: ``*`` any run of characters, ``?`` one (no character classes)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def _condition(block: Mapping, context: Mapping[str, str]) -> bool | None:
    """True / False when every operator of the block is understood, else None."""
    for op, tests in block.items():
        base = op[:-len("IfExists")] if op.endswith("IfExists") else op
        if base not in _OPERATORS or not isinstance(tests, Mapping):
            return None
        like, negated = _OPERATORS[base]
        for key, values in tests.items():
            if key not in context:
                if op.endswith("IfExists"):
                    continue
                return False if not negated else True
            hit = any((_wild(str(v), context[key]) if like else str(v) == context[key])
                      for v in _list(values))
            if hit == negated:
                return False
    return True


def _applies(statement: Mapping, action: str, resource: str) -> bool:
    if "NotAction" in statement:
        if any(_wild(a, action, case=False) for a in _list(statement["NotAction"])):
            return False
    elif not any(_wild(a, action, case=False) for a in _list(statement.get("Action"))):
        return False
    if "NotResource" in statement:
        return not any(_wild(r, resource) for r in _list(statement["NotResource"]))
    return any(_wild(r, resource) for r in _list(statement.get("Resource")))


def decide(documents: Iterable[Mapping], action: str, resource: str,
           context: Mapping[str, str] | None = None) -> str:
    """ALLOWED, DENIED (an explicit Deny), NOT_GRANTED (no Allow) or UNKNOWN (only an Allow
    or a Deny whose condition this module cannot evaluate)."""
    context = context or {}
    allowed = unknown = False
    for doc in documents:
        for st in _list(doc.get("Statement")):
            if not isinstance(st, Mapping) or not _applies(st, action, resource):
                continue
            holds = _condition(st.get("Condition") or {}, context)
            if st.get("Effect") == "Deny":
                if holds:
                    return DENIED
                unknown = unknown or holds is None
            elif st.get("Effect") == "Allow":
                allowed = allowed or bool(holds)
                unknown = unknown or holds is None
    return ALLOWED if allowed and not unknown else UNKNOWN if unknown or allowed else NOT_GRANTED


@dataclass(frozen=True)
class Need:
    """One permission a job needs: ``what`` names the URI and its use in messages."""

    what: str
    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()


def s3_arn(partition: str, bucket: str, key: str | None = None) -> str:
    return f"arn:{partition}:s3:::{bucket}" + (f"/{key}" if key is not None else "")


def needs_to_read(label: str, partition: str, bucket: str, key: str,
                  first_key: str | None) -> list[Need]:
    """Reading ``s3://bucket/key``: a file (``first_key`` is the key itself) or a prefix
    (listed with that prefix, then ``first_key``, one of its objects, read)."""
    needs = []
    if first_key != key:
        prefix = key.rstrip("/") + "/" if key else ""
        needs.append(Need(label, "s3:ListBucket", s3_arn(partition, bucket),
                          (("s3:prefix", prefix),)))
    needs.append(Need(label, "s3:GetObject", s3_arn(partition, bucket, first_key or key)))
    return needs


def needs_to_write(label: str, partition: str, bucket: str, prefix: str) -> list[Need]:
    """Writing run folders under ``s3://bucket/prefix/`` (and reading them back to resume)."""
    probe = f"{prefix.rstrip('/')}/cvtrain-preflight" if prefix else "cvtrain-preflight"
    folder = probe.rsplit("/", 1)[0] + "/" if "/" in probe else ""
    return [Need(label, "s3:PutObject", s3_arn(partition, bucket, probe)),
            Need(label, "s3:GetObject", s3_arn(partition, bucket, probe)),
            Need(label, "s3:ListBucket", s3_arn(partition, bucket), (("s3:prefix", folder),))]


def refusals(documents: list[Mapping], needs: Iterable[Need], role: str) -> list[str]:
    """One line per need the role's policies deny or do not grant."""
    lines = []
    for need in needs:
        verdict = decide(documents, need.action, need.resource, dict(need.context))
        if verdict in (DENIED, NOT_GRANTED):
            how = "explicitly denies" if verdict == DENIED else "does not allow"
            lines.append(f"{need.what}: the job role {role} {how} {need.action} on "
                         f"{need.resource}" + "".join(f" ({k} {v!r})" for k, v in need.context))
    return lines


__all__ = ["ALLOWED", "DENIED", "NOT_GRANTED", "UNKNOWN", "Need", "decide", "needs_to_read",
           "needs_to_write", "refusals", "s3_arn"]
