"""Before a Batch submission: credentials, queue (and the GPUs its instances have), image,
bucket, every ``s3://`` input, and what the job role's own policies let the job do there
(:mod:`cvtrain.cloud.access` evaluates them). Each failure is one line; the AWS calls are
boto3 through :mod:`cvtrain.cloud.aws`'s clients and error wording."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from cvtrain.aws_errors import AUTH_CODES, error_code, is_aws_error
from cvtrain.cloud import aws
from cvtrain.cloud.aws import client, describe, errors
from cvtrain.cloud.definitions import max_gpus
from cvtrain.errors import CloudError, StorageError

if TYPE_CHECKING:
    from cvtrain.cloud.batch import Target
    from cvtrain.spec import JobSpec


def preflight(target: Target, specs: Sequence[JobSpec] = (), gpus: int = 1) -> list[str]:
    """Credentials, queue, image, bucket, then every s3:// URI the job reads (data,
    weights: in any of ``specs``, a sweep's variants) and, when the job role is known,
    what its own policies let the job do there; lines saying what was checked (the
    first failure is one-line error; the job role's refusals all in one)."""
    done = [f"credentials: {aws.check_credentials()}"]
    queue = aws.check_queue(target.queue)
    done.append(f"queue: {target.queue} (ENABLED, VALID)")
    if gpus > 1:
        types = queue_instance_types(queue)
        most = max_gpus(types) if types else None
        if most is not None and gpus > most:
            raise CloudError(f"--gpus {gpus}: the instance types of queue {target.queue} "
                             f"({', '.join(types)}) have at most {most} GPUs; the job "
                             "would wait RUNNABLE for ever")
    digest = aws.check_image(target.image)
    done.append(f"image: {target.image}" + (f" ({digest[:19]})" if digest else
                                            " (not ECR: not checked)"))
    aws.check_bucket(target.results)
    done.append(f"results: {target.results}")
    reads = []
    for key, uri in s3_inputs(specs):
        first, count, size = check_input(key, uri)
        reads.append((key, uri, first))
        done.append(f"{key}: {uri} ({count} object{'s' if count != 1 else ''}, "
                    f"{_size(size)})")
    done.append(_check_job_role(target, reads))
    return done

def _check_job_role(target: Target, reads) -> str:
    """What the job role's policies say of the reads and of writing the results."""
    from cvtrain.cloud import access
    from cvtrain.storage.s3 import S3Uri

    role = target.job_role_arn
    if not role:
        return "job role: not known (no --stack): its permissions are not checked"
    docs = role_policy_documents(role)
    if docs is None:
        return (f"job role: {role}: these credentials may not read its policies "
                "(iam:GetRolePolicy, iam:ListRolePolicies...): not checked")
    partition = role.split(":")[1] if role.count(":") >= 5 else "aws"
    needs = []
    for key, uri, first in reads:
        u = S3Uri.parse(uri)
        needs += access.needs_to_read(f"{key} {uri}", partition, u.bucket, u.key, first)
    r = S3Uri.parse(target.results)
    needs += access.needs_to_write(f"results {target.results}", partition, r.bucket, r.key)
    refused = access.refusals(docs, needs, role)
    if refused:
        more = f" (and {len(refused) - 1} more: {'; '.join(refused[1:])})" if len(
            refused) > 1 else ""
        raise CloudError(refused[0] + more)
    return f"job role: {role} may read the inputs and write {target.results}"


def queue_instance_types(queue: Mapping) -> list[str] | None:
    """The instance types of the queue's managed compute environments, or None when any of
    them has none to say (unmanaged)."""
    arns = [o["computeEnvironment"] for o in queue.get("computeEnvironmentOrder") or []]
    if not arns:
        return None
    with errors(f"compute environments of {queue.get('jobQueueName')}"):
        found = client("batch").describe_compute_environments(
            computeEnvironments=arns)["computeEnvironments"]
    types: list[str] = []
    for ce in found:
        listed = (ce.get("computeResources") or {}).get("instanceTypes")
        if ce.get("type") != "MANAGED" or not listed:
            return None
        types += listed
    return types


def check_input(key: str, uri: str) -> tuple[str, int, int]:
    """That an s3:// file or folder a job reads exists (with these credentials): (the key
    of the file itself or of the folder's first object, object count, total bytes)."""
    from cvtrain.storage import s3 as s3mod

    u = s3mod.S3Uri.parse(uri)
    try:
        listing = s3mod.list_objects(u)
    except StorageError as exc:
        raise CloudError(f"{key}: {exc}") from None
    exact = [o for o in listing if o.key == u.key]
    inside = [o for o in listing if o.key.startswith(u.folder().key) and not o.key.endswith("/")]
    found = exact or inside
    if not found:
        raise CloudError(f"{key}: {uri}: no such object or prefix (push it first: "
                         "cvtrain data push)")
    return found[0].key, len(found), sum(o.size for o in found)


def role_policy_documents(role_arn: str) -> list[dict] | None:
    """The identity policies of an IAM role (inline and attached, their default versions),
    or None when these credentials may not read them (then nothing is checked)."""
    name = role_arn.rsplit("/", 1)[-1]
    iam = client("iam")
    docs: list[dict] = []
    try:
        for page in iam.get_paginator("list_role_policies").paginate(RoleName=name):
            for policy in page["PolicyNames"]:
                docs.append(_document(iam.get_role_policy(RoleName=name, PolicyName=policy)[
                    "PolicyDocument"]))
        for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=name):
            for attached in page["AttachedPolicies"]:
                arn = attached["PolicyArn"]
                version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
                docs.append(_document(iam.get_policy_version(
                    PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]))
    except Exception as exc:
        if not is_aws_error(exc):
            raise
        if error_code(exc) in AUTH_CODES:
            return None
        raise CloudError(describe(exc, f"job role {role_arn}")) from None
    return docs


def _document(doc) -> dict:
    """A policy document as a dict (IAM answers URL-encoded JSON where boto3 does not
    decode it)."""
    if isinstance(doc, str):
        from urllib.parse import unquote

        doc = json.loads(unquote(doc))
    return doc


def s3_inputs(specs: Sequence[JobSpec]) -> list[tuple[str, str]]:
    """(key, URI) of every distinct s3:// file or folder the specs read (``data.path``,
    ``model.weights``: the path fields datasets and models declare), in order."""
    seen: dict[str, str] = {}
    for spec in specs:
        for section in ("data", "model"):
            opts = getattr(spec, section)
            for name in opts.path_fields:
                value = getattr(opts, name)
                if isinstance(value, str) and value.startswith("s3://"):
                    seen.setdefault(value, f"{section}.{name}")
    return [(key, uri) for uri, key in seen.items()]


def _size(n: int) -> str:
    from cvtrain.storage import human_bytes

    return human_bytes(n)
