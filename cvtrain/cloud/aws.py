"""The AWS calls behind :class:`cvtrain.cloud.batch.BatchRunner`: stack outputs,
pre-submit checks, job definition reuse, submission, status, logs, cancel.

boto3 is imported inside functions only. Credentials, region and endpoints come from
boto3's own configuration (environment, profiles, instance roles, ``AWS_ENDPOINT_URL`` and
``AWS_ENDPOINT_URL_<SERVICE>``). Every failure becomes a one-line :class:`CloudError`
(exit 5), or :class:`StorageError` for the bucket, never quoting credentials.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Mapping

from cvtrain.aws_errors import describe_aws_error, error_code, is_aws_error
from cvtrain.cloud.definitions import same_definition
from cvtrain.cloud.status import TERMINAL_STATES
from cvtrain.errors import CloudError, StorageError, UsageError

#: ``<account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:tag|@digest]``
ECR_IMAGE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?"
    r"/(?P<repo>[a-z0-9][a-z0-9._/-]*?)(?::(?P<tag>[\w][\w.-]{0,127})|@(?P<digest>sha256:"
    r"[0-9a-f]{64}))?$")

#: where Batch sends a container's log unless its job definition says otherwise
DEFAULT_LOG_GROUP = "/aws/batch/job"


def describe(exc: BaseException, what: str) -> str:
    """One line for a boto3/botocore exception; credentials are never formatted."""
    return describe_aws_error(exc, what, credentials="AWS credentials",
                              endpoint="the AWS endpoint")


@contextlib.contextmanager
def errors(what: str) -> Iterator[None]:
    """boto3/botocore exceptions in the block become a one-line CloudError."""
    try:
        yield
    except (CloudError, StorageError, UsageError):
        raise
    except Exception as exc:
        if is_aws_error(exc):
            raise CloudError(describe(exc, what)) from None
        raise


_clients: dict[tuple[str, str | None], object] = {}
#: botocore's standard retry mode: throttling and transient errors, with backoff
MAX_ATTEMPTS = 6


def client(service: str, region: str | None = None):
    """A boto3 client (cached per service and region); endpoints from boto3's config."""
    key = (service, region)
    if key in _clients:
        return _clients[key]
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - boto3 is a dependency
        raise CloudError("AWS Batch needs boto3: pip install boto3") from exc
    with errors(f"{service} client"):
        made = boto3.session.Session().client(
            service, region_name=region,
            config=Config(retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                          connect_timeout=10, read_timeout=60))
    _clients[key] = made
    return made


# ---------------------------------------------------------------------------- stack outputs


def stack_outputs(stack: str) -> dict[str, str]:
    """The outputs of a CloudFormation stack, ``{OutputKey: OutputValue}``."""
    cfn = client("cloudformation")
    try:
        found = cfn.describe_stacks(StackName=stack)["Stacks"]
    except Exception as exc:
        if is_aws_error(exc) and error_code(exc) == "ValidationError":
            raise CloudError(f"stack {stack}: no such CloudFormation stack in this region "
                             "(deploy it with `make infra-deploy`)") from None
        if is_aws_error(exc):
            raise CloudError(describe(exc, f"stack {stack}")) from None
        raise
    return {o["OutputKey"]: o["OutputValue"] for o in (found[0].get("Outputs") or [])}


# ---------------------------------------------------------------------------- pre-submit checks


def check_credentials() -> str:
    """The caller's ARN, or one line about the credentials."""
    sts = client("sts")
    with errors("AWS credentials"):
        return sts.get_caller_identity()["Arn"]


def check_queue(queue: str) -> dict:
    with errors(f"job queue {queue}"):
        found = client("batch").describe_job_queues(jobQueues=[queue])["jobQueues"]
    if not found:
        raise CloudError(f"job queue {queue}: no such AWS Batch job queue in this region")
    q = found[0]
    if q.get("state") != "ENABLED" or q.get("status") not in ("VALID", "UPDATING"):
        raise CloudError(f"job queue {queue}: state {q.get('state')}, status "
                         f"{q.get('status')}; expected ENABLED and VALID")
    return q


def pinned_image(image: str, digest: str | None = None) -> str:
    """An ECR image by tag as ``<registry>/<repository>@<digest>`` (what the tag points to
    now: a job, its retries and its array children then run exactly that image, whatever is
    pushed later); ``digest`` when already looked up. Other registries and images already
    given by digest: unchanged."""
    m = ECR_IMAGE.match(image)
    if not m or m["digest"]:
        return image
    digest = digest or check_image(image)
    return f"{image.rsplit('@', 1)[0].rsplit(':', 1)[0]}@{digest}" if digest else image


def check_image(image: str) -> str | None:
    """For an ECR image, that its repository and tag (or digest) exist; other registries
    cannot be checked without pulling (None)."""
    m = ECR_IMAGE.match(image)
    if not m:
        return None
    repo, tag, digest = m["repo"], m["tag"], m["digest"]
    image_id = {"imageDigest": digest} if digest else {"imageTag": tag or "latest"}
    ecr = client("ecr", m["region"])
    try:
        found = ecr.describe_images(registryId=m["account"], repositoryName=repo,
                                    imageIds=[image_id])["imageDetails"]
    except Exception as exc:
        if not is_aws_error(exc):
            raise
        code = error_code(exc)
        if code == "RepositoryNotFoundException":
            raise CloudError(f"image {image}: no ECR repository {repo} in account "
                             f"{m['account']}, region {m['region']}") from None
        if code == "ImageNotFoundException":
            raise CloudError(f"image {image}: {next(iter(image_id.values()))} is not in ECR "
                             f"repository {repo}; push it first (make push-ecr)") from None
        raise CloudError(describe(exc, f"image {image}")) from None
    if not found:
        raise CloudError(f"image {image}: not in ECR repository {repo}; push it first")
    return found[0].get("imageDigest")


def check_bucket(results: str) -> None:
    from cvtrain.storage import retries
    from cvtrain.storage import s3 as s3mod

    uri = s3mod.S3Uri.parse(results)
    s3 = s3mod.client()
    try:
        s3.head_bucket(Bucket=uri.bucket)
    except Exception as exc:
        if not is_aws_error(exc):
            raise
        code = error_code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(f"results {results}: no such bucket {uri.bucket}") from None
        raise StorageError(retries.describe(exc, f"results {results}")) from None


# ---------------------------------------------------------------------------- submission


def ensure_job_definition(definition: dict) -> tuple[str, bool]:
    """The ARN of an ACTIVE definition with this content (registered when none); and
    whether it was registered now."""
    b = client("batch")
    name = definition["jobDefinitionName"]
    with errors(f"job definition {name}"):
        pages = b.get_paginator("describe_job_definitions").paginate(
            jobDefinitionName=name, status="ACTIVE")
        for page in pages:
            for existing in page.get("jobDefinitions") or []:
                if same_definition(definition, existing):
                    return existing["jobDefinitionArn"], False
        made = b.register_job_definition(**definition)
    return made["jobDefinitionArn"], True


def submit(kwargs: dict) -> dict:
    with errors(f"submit {kwargs.get('jobName')}"):
        made = client("batch").submit_job(**kwargs)
    return {"jobId": made["jobId"], "jobName": made["jobName"], "jobArn": made.get("jobArn")}


def describe_jobs(job_ids: list[str], missing_ok: bool = False) -> list[dict]:
    """``describe_jobs`` in pages of 100, in the order asked; unknown ids are refused (or
    left out with ``missing_ok``: Batch forgets jobs some days after they end)."""
    b = client("batch")
    found: dict[str, dict] = {}
    for i in range(0, len(job_ids), 100):
        chunk = job_ids[i:i + 100]
        with errors("describe jobs"):
            for job in b.describe_jobs(jobs=chunk)["jobs"]:
                found[job["jobId"]] = job
    unknown = [j for j in job_ids if j not in found]
    if unknown and not missing_ok:
        raise CloudError(f"job {unknown[0]}: no such AWS Batch job (jobs are kept about "
                         "7 days after they finish)")
    return [found[j] for j in job_ids if j in found]


def with_images(jobs: list[dict]) -> list[dict]:
    """The jobs, each with ``container.image`` filled in from its job definition where
    ``describe_jobs`` left it out (one call for up to 100 definitions)."""
    missing = sorted({j["jobDefinition"] for j in jobs if j.get("jobDefinition")
                      and not (j.get("container") or {}).get("image")})
    images: dict[str, str] = {}
    for start in range(0, len(missing), 100):
        with errors("job definitions"):
            found = client("batch").describe_job_definitions(
                jobDefinitions=missing[start:start + 100])["jobDefinitions"]
        images.update({d["jobDefinitionArn"]: (d.get("containerProperties") or {}).get(
            "image", "") for d in found})
    for job in jobs:
        if job.get("jobDefinition") in images and not (job.get("container") or {}).get("image"):
            job.setdefault("container", {})["image"] = images[job["jobDefinition"]]
    return jobs


def definition_environment(arn: str | None) -> dict[str, str]:
    """The environment a job definition gives its containers ({} when there is none)."""
    if not arn:
        return {}
    with errors(f"job definition {arn}"):
        found = client("batch").describe_job_definitions(jobDefinitions=[arn])["jobDefinitions"]
    env = (found[0].get("containerProperties") or {}).get("environment") or [] if found else []
    return {e["name"]: e["value"] for e in env}


def cancel(job_id: str, reason: str) -> None:
    describe_jobs([job_id])
    with errors(f"cancel {job_id}"):
        client("batch").terminate_job(jobId=job_id, reason=reason)


def log_location(job: Mapping) -> tuple[str, str | None]:
    """(log group, log stream of the latest attempt or None when it has not started)."""
    container = job.get("container") or {}
    stream = container.get("logStreamName")
    if not stream:
        for attempt in reversed(job.get("attempts") or []):
            stream = (attempt.get("container") or {}).get("logStreamName")
            if stream:
                break
    group = None
    log_config = container.get("logConfiguration") or {}
    if log_config.get("logDriver") == "awslogs":
        group = (log_config.get("options") or {}).get("awslogs-group")
    if not group and job.get("jobDefinition"):
        with errors(f"job definition of {job.get('jobId')}"):
            defs = client("batch").describe_job_definitions(
                jobDefinitions=[job["jobDefinition"]])["jobDefinitions"]
        for d in defs:
            cfg = (d.get("containerProperties") or {}).get("logConfiguration") or {}
            group = (cfg.get("options") or {}).get("awslogs-group") or group
    return group or DEFAULT_LOG_GROUP, stream


def attempt_streams(job: Mapping) -> list[str]:
    """The log streams of the job's attempts, oldest first (the one running now last)."""
    streams = [(a.get("container") or {}).get("logStreamName")
               for a in job.get("attempts") or []]
    streams = [s for s in streams if s]
    current = (job.get("container") or {}).get("logStreamName")
    if current and current not in streams:
        streams.append(current)
    return streams


def log_lines(job_id: str, follow: bool = False, poll_seconds: float = 5.0,
              sleep: Callable[[float], None] = time.sleep) -> Iterator[str]:
    """The messages of the job's latest attempt's log events, as they are read; with
    ``follow`` until the job ends, going on to each new attempt's own stream (a retry after
    a spot reclaim or exit 75 logs to a new one) once the previous one is read to its end,
    with a line saying so."""
    job = describe_jobs([job_id])[0]
    if (job.get("arrayProperties") or {}).get("size"):
        raise UsageError(f"job {job_id}: an array job has no log of its own; give a child, "
                         f"e.g. {job_id}:0")
    logs = client("logs")
    tokens: dict[str, str | None] = {}  # each stream's own forward token
    reading = None
    while True:
        group, _ = log_location(job)
        streams = attempt_streams(job)
        todo = streams[streams.index(reading):] if reading in streams else streams[-1:]
        for stream in todo:
            if reading is not None and stream != reading:
                yield (f"-- attempt {streams.index(stream) + 1} of job {job_id}: "
                       f"log stream {stream}")
            reading = stream
            yield from _read_stream(logs, job_id, group, stream, tokens)
        if not streams and not follow:
            raise CloudError(f"job {job_id}: no log yet (state {job.get('status')}); "
                             "try again when it is RUNNING, or use --follow")
        if not follow or job.get("status") in TERMINAL_STATES:
            return
        sleep(poll_seconds)
        job = describe_jobs([job_id])[0]


def _read_stream(logs, job_id: str, group: str, stream: str,
                 tokens: dict[str, str | None]) -> Iterator[str]:
    """The stream's events after ``tokens[stream]``, page by page; the token advanced."""
    while True:
        args = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
        if tokens.get(stream):
            args["nextToken"] = tokens[stream]
        try:
            page = logs.get_log_events(**args)
        except Exception as exc:
            if is_aws_error(exc) and error_code(exc) == "ResourceNotFoundException":
                raise CloudError(f"job {job_id}: log stream {stream} not found in "
                                 f"log group {group}") from None
            if is_aws_error(exc):
                raise CloudError(describe(exc, f"logs of {job_id}")) from None
            raise
        for event in page.get("events") or []:
            yield event.get("message", "")
        new = page.get("nextForwardToken")
        if not new or new == tokens.get(stream):
            return
        tokens[stream] = new
