"""A submission in AWS Batch's words: the job definition, its retry strategy and resources,
the ``submit_job`` arguments, the spec's encoding and the run ids. Pure functions, no AWS
calls (those are in :mod:`cvtrain.cloud.aws`), so they are tested against golden files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from cvtrain.errors import UsageError
from cvtrain.training.checkpoint import EXIT_TERMINATED

#: environment of the container (job definition and job)
ENV_SPEC = "CVTRAIN_SPEC_B64"
ENV_SWEEP = "CVTRAIN_SWEEP"
#: a job set (several jobs, one array job): every child's resolved spec, compressed
ENV_SPECS = "CVTRAIN_SPECS_Z64"
ENV_RESULTS = "CVTRAIN_RESULTS"
ENV_RUNS = "CVTRAIN_RUNS"
#: set by ``cvtrain submit --resume``: the run to continue (else derived from the job id)
ENV_RUN_ID = "CVTRAIN_RUN_ID"
#: what the container does other than training the spec: ``features`` extracts the
#: backbone features the spec's head trains on and shares them in the results root
ENV_TASK = "CVTRAIN_TASK"
TASK_FEATURES = "features"
#: what Batch sets in the container
ENV_JOB_ID = "AWS_BATCH_JOB_ID"
ENV_ARRAY_INDEX = "AWS_BATCH_JOB_ARRAY_INDEX"
ENV_ATTEMPT = "AWS_BATCH_JOB_ATTEMPT"

#: the local run folder inside the container; the results URI is the copy that counts
CONTAINER_RUNS = "/tmp/runs"
#: the image's ENTRYPOINT is ``cvtrain``; this is its argument list
COMMAND = ["run-batch"]

#: AWS Batch limits: a SubmitJob request (our spec travels in it) and array sizes
MAX_PAYLOAD_BYTES = 30 * 1024
MAX_ARRAY_SIZE = 10_000
#: per GPU when --vcpus / --memory are not given: fits g4dn.xlarge and g5.xlarge (4 vCPUs,
#: 16 GiB, of which ECS leaves the container a little less)
VCPUS_PER_GPU = 4
MEMORY_MIB_PER_GPU = 14_000
#: the time limit of one attempt unless given
DEFAULT_TIMEOUT_SECONDS = 24 * 3600


@dataclass(frozen=True)
class BatchOptions:
    """Everything about a submission except the spec and its sweep."""

    image: str
    queue: str
    results: str
    gpus: int = 1
    vcpus: int | None = None
    memory_mib: int | None = None
    attempts: int = 3
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    job_role_arn: str | None = None
    log_group: str | None = None

    @property
    def resolved_vcpus(self) -> int:
        return self.vcpus or VCPUS_PER_GPU * max(self.gpus, 1)

    @property
    def resolved_memory_mib(self) -> int:
        return self.memory_mib or MEMORY_MIB_PER_GPU * max(self.gpus, 1)


# ---------------------------------------------------------------------------- the spec


def encode_spec(spec_yaml: str) -> str:
    return base64.b64encode(spec_yaml.encode("utf-8")).decode("ascii")


def decode_spec(value: str) -> str:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise UsageError(f"${ENV_SPEC}: expected a base64-encoded job spec") from None


def encode_specs(spec_yamls: list[str]) -> str:
    """A job set's specs in one variable: a JSON list, zlib-compressed (twelve specs in a
    few KB, well inside SubmitJob's limit), base64."""
    packed = zlib.compress(json.dumps(spec_yamls, separators=(",", ":")).encode(), 9)
    return base64.b64encode(packed).decode("ascii")


def decode_specs(value: str) -> list[str]:
    try:
        specs = json.loads(zlib.decompress(base64.b64decode(value.encode("ascii"),
                                                            validate=True)))
    except (binascii.Error, zlib.error, UnicodeError, ValueError):
        specs = None
    if not isinstance(specs, list) or not specs or not all(isinstance(s, str) for s in specs):
        raise UsageError(f"${ENV_SPECS}: expected a compressed list of job specs")
    return specs


# ---------------------------------------------------------------------------- definition


#: GPUs of each EC2 GPU instance size AWS Batch can run (NVIDIA ones; g4ad/AMD too), by
#: family; a family name in a compute environment means any of its sizes
INSTANCE_GPUS: dict[str, dict[str, int]] = {
    family: {size: n for sizes, n in table for size in sizes.split()}
    for family, table in {
        "g4dn": [("xlarge 2xlarge 4xlarge 8xlarge 16xlarge", 1), ("12xlarge", 4), ("metal", 8)],
        "g4ad": [("xlarge 2xlarge 4xlarge", 1), ("8xlarge", 2), ("16xlarge", 4)],
        "g5": [("xlarge 2xlarge 4xlarge 8xlarge 16xlarge", 1), ("12xlarge 24xlarge", 4),
               ("48xlarge", 8)],
        "g5g": [("xlarge 2xlarge 4xlarge 8xlarge", 1), ("16xlarge metal", 2)],
        "g6": [("xlarge 2xlarge 4xlarge 8xlarge 16xlarge", 1), ("12xlarge 24xlarge", 4),
               ("48xlarge", 8)],
        "g6e": [("xlarge 2xlarge 4xlarge 8xlarge 16xlarge", 1), ("12xlarge 24xlarge", 4),
                ("48xlarge", 8)],
        "p3": [("2xlarge", 1), ("8xlarge", 4), ("16xlarge", 8)],
        "p3dn": [("24xlarge", 8)], "p4d": [("24xlarge", 8)], "p4de": [("24xlarge", 8)],
        "p5": [("48xlarge", 8)], "p5e": [("48xlarge", 8)],
    }.items()
}


def max_gpus(instance_types: list[str]) -> int | None:
    """The most GPUs one instance of these types (``g5.12xlarge``) or families (``g5``)
    has; None when any of them is not in :data:`INSTANCE_GPUS` (``optimal``, a new family):
    then nothing can be concluded."""
    best = 0
    for kind in instance_types:
        family, _, size = kind.partition(".")
        sizes = INSTANCE_GPUS.get(family)
        if sizes is None or (size and size not in sizes):
            return None
        best = max(best, sizes[size] if size else max(sizes.values()))
    return best or None


def check_resources(gpus: int, attempts: int, timeout_seconds: int) -> None:
    """What Batch would refuse about the resources and the retry policy, as one line."""
    if gpus < 0 or attempts < 1 or attempts > 10:
        raise UsageError("--gpus must be >= 0 and --attempts 1..10")
    if timeout_seconds < 60:
        raise UsageError(f"--timeout {timeout_seconds} s: expected at least 60 s "
                         "(AWS Batch's minimum)")


def retry_strategy(attempts: int) -> dict:
    """Retry spot reclamation, a container that failed to start (an image pull or the
    container runtime's hiccup: ``CannotPullContainerError``, ``CannotStartContainerError``
    and their kin, whose job status reason is "Task failed to start", as in AWS's own retry
    example) and our SIGTERM exit code; give up on everything else.

    Batch takes the first matching condition, of at most 5; a failure matching none would be
    retried, so the last two conditions catch everything (``onReason`` is empty for a plain
    non-zero exit, ``onStatusReason`` never is)."""
    return {
        "attempts": attempts,
        "evaluateOnExit": [
            {"onStatusReason": "Host EC2*", "action": "RETRY"},
            {"onStatusReason": "Task failed to start", "action": "RETRY"},
            {"onExitCode": str(EXIT_TERMINATED), "action": "RETRY"},
            {"onReason": "*", "action": "EXIT"},
            {"onStatusReason": "*", "action": "EXIT"},
        ],
    }


def resource_requirements(options: BatchOptions) -> list[dict]:
    reqs = [{"type": "VCPU", "value": str(options.resolved_vcpus)},
            {"type": "MEMORY", "value": str(options.resolved_memory_mib)}]
    if options.gpus:
        reqs.insert(0, {"type": "GPU", "value": str(options.gpus)})
    return reqs


#: /dev/shm of a container with several GPUs, as a share of its memory: NCCL's all-reduce
#: between GPUs goes through shared memory, and Docker's default of 64 MB makes it fail
SHM_SHARE = 4


def linux_parameters(options: BatchOptions) -> dict:
    params: dict = {"initProcessEnabled": True}
    if options.gpus > 1:
        params["sharedMemorySize"] = options.resolved_memory_mib // SHM_SHARE  # MiB
    return params


def definition_body(options: BatchOptions) -> dict:
    """``register_job_definition`` arguments without the name."""
    container: dict = {
        "image": options.image,
        "command": list(COMMAND),
        "resourceRequirements": resource_requirements(options),
        # an init as PID 1 (docker's --init): signals reach cvtrain, children are reaped
        "linuxParameters": linux_parameters(options),
        "environment": [
            {"name": ENV_RESULTS, "value": options.results},
            {"name": ENV_RUNS, "value": CONTAINER_RUNS},
        ],
    }
    if options.job_role_arn:
        container["jobRoleArn"] = options.job_role_arn
    if options.log_group:
        container["logConfiguration"] = {"logDriver": "awslogs",
                                         "options": {"awslogs-group": options.log_group}}
    return {
        "type": "container",
        "platformCapabilities": ["EC2"],
        "containerProperties": container,
        "retryStrategy": retry_strategy(options.attempts),
        "timeout": {"attemptDurationSeconds": options.timeout_seconds},
    }


def definition_name(body: Mapping) -> str:
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return f"cvtrain-{digest[:16]}"


def job_definition(options: BatchOptions) -> dict:
    """The full ``register_job_definition`` arguments; the name is a hash of the rest."""
    check_resources(options.gpus, options.attempts, options.timeout_seconds)
    body = definition_body(options)
    return {"jobDefinitionName": definition_name(body), **body}


def same_definition(ours: Mapping, theirs: Mapping) -> bool:
    """True when every value we set is what ``describe_job_definitions`` returned (which
    adds defaults such as empty ``volumes``)."""

    def covers(a, b, key: str = "") -> bool:
        if isinstance(a, Mapping):
            return isinstance(b, Mapping) and all(k in b and covers(v, b[k], k)
                                                  for k, v in a.items())
        if isinstance(a, list):
            return (isinstance(b, list) and len(a) == len(b)
                    and all(covers(x, y, key) for x, y in zip(a, b, strict=True)))
        if key == "action":  # RETRY / EXIT come back in either case
            return str(a).upper() == str(b).upper()
        return a == b or str(a) == str(b)

    return covers({k: v for k, v in ours.items() if k != "jobDefinitionName"}, theirs)


# ---------------------------------------------------------------------------- the job


def job_name(spec_name: str, array: bool) -> str:
    """Batch job names: up to 128 letters, digits, ``-`` and ``_``."""
    base = re.sub(r"[^A-Za-z0-9_-]", "-", f"cvtrain-{spec_name}")
    return (base + ("-sweep" if array else ""))[:128]


def set_name(names: list[str]) -> str:
    """What a job set is called where one name is wanted (the job's name, tags)."""
    return f"set-{names[0]}-and-{len(names) - 1}-more"


def submit_job_kwargs(spec_name: str, spec_yaml: str, variants: list[list[str]],
                      definition: str, queue: str, set_specs: list[str] | None = None) -> dict:
    """``submit_job`` arguments: one job, or an array job with one child per variant
    (``variants`` are ``--set`` lists; ``[[]]``: no sweep), or with one child per job of a
    set (``set_specs``: each child's resolved spec; ``spec_name``: :func:`set_name`)."""
    array = len(variants) > 1 or bool(set_specs and len(set_specs) > 1)
    if set_specs:
        environment = [{"name": ENV_SPECS, "value": encode_specs(set_specs)}]
    else:
        environment = [{"name": ENV_SPEC, "value": encode_spec(spec_yaml)}]
    if any(variants) and not set_specs:
        environment.append({"name": ENV_SWEEP,
                            "value": json.dumps(variants, separators=(",", ":"))})
    kwargs: dict = {
        "jobName": job_name(spec_name, array and not set_specs),
        "jobQueue": queue,
        "jobDefinition": definition,
        "containerOverrides": {"environment": environment},
        "tags": {"cvtrain:job": spec_name[:256]},
        "propagateTags": True,
    }
    if array:
        kwargs["arrayProperties"] = {"size": len(set_specs) if set_specs else len(variants)}
    size = len(json.dumps(kwargs).encode())
    if size > MAX_PAYLOAD_BYTES:
        raise UsageError(f"{spec_name}: the job (resolved spec and sweep) takes {size} bytes; "
                         f"expected at most {MAX_PAYLOAD_BYTES} (AWS Batch's SubmitJob limit)")
    return kwargs


def run_id_for(job_id: str, index: int | None = None) -> str:
    """The run id of a Batch job (or array child): the same in every attempt."""
    parent = job_id.split(":", 1)[0]
    if index is None and ":" in job_id:
        index = int(job_id.split(":", 1)[1])
    return parent if index is None else f"{parent}-{index}"
