"""AWS Batch in cvtrain's words: pure translation functions, no AWS calls (see
:mod:`cvtrain.cloud.aws` for those), so they are tested against golden files.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cvtrain.checkpoint import EXIT_TERMINATED
from cvtrain.errors import UsageError

#: environment of the container (job definition and job)
ENV_SPEC = "CVTRAIN_SPEC_B64"
ENV_SWEEP = "CVTRAIN_SWEEP"
ENV_RESULTS = "CVTRAIN_RESULTS"
ENV_RUNS = "CVTRAIN_RUNS"
#: what Batch sets in the container
ENV_JOB_ID = "AWS_BATCH_JOB_ID"
ENV_ARRAY_INDEX = "AWS_BATCH_JOB_ARRAY_INDEX"
ENV_ATTEMPT = "AWS_BATCH_JOB_ATTEMPT"

#: the local run folder inside the container; the results URI is the copy that counts
CONTAINER_RUNS = "/tmp/runs"
#: the image's ENTRYPOINT is ``cvtrain``; this is its argument list
COMMAND = ["run-batch"]
DEFAULT_LOG_GROUP = "/aws/batch/job"

#: AWS Batch limits: a SubmitJob request (our spec travels in it) and array sizes
MAX_PAYLOAD_BYTES = 30 * 1024
MAX_ARRAY_SIZE = 10_000
#: a job RUNNABLE for longer than this gets a capacity hint in ``cvtrain status``
RUNNABLE_HINT_SECONDS = 600
#: per GPU when --vcpus / --memory are not given: fits g4dn.xlarge and g5.xlarge (4 vCPUs,
#: 16 GiB, of which ECS leaves the container a little less)
VCPUS_PER_GPU = 4
MEMORY_MIB_PER_GPU = 14_000

TERMINAL_STATES = ("SUCCEEDED", "FAILED")


class BatchBackend:
    """AWS Batch as a cvtrain backend. How our words map onto Batch's:

    ============================  =========================================================
    cvtrain                       AWS Batch
    ============================  =========================================================
    the image, GPUs, vCPUs,       a *job definition* (``containerProperties``: image,
    memory, results URI, retry    ``resourceRequirements``, ``environment``, ``command``
    and timeout policy            ``["run-batch"]``; ``retryStrategy``; ``timeout``), named
                                  ``cvtrain-<hash of its content>`` so an identical one is
                                  reused rather than registered again
    a job spec (resolved YAML)    a *job* of that definition: the spec travels base64 in
                                  the job's environment (``CVTRAIN_SPEC_B64``)
    a sweep (``--sweep k=a,b``)   an *array job*, one child per variant; variants are a
                                  JSON list in ``CVTRAIN_SWEEP``, child N takes variant
                                  ``AWS_BATCH_JOB_ARRAY_INDEX`` and applies it as ``--set``
    results URI                   ``CVTRAIN_RESULTS`` in the job definition's environment
    run id                        derived from ``AWS_BATCH_JOB_ID`` (+ array index): the
                                  same in every attempt, so a retried attempt resumes
                                  from the checkpoint in the results URI
    SIGTERM → checkpoint, exit 75 ``retryStrategy.evaluateOnExit``: RETRY on exit code 75
    spot reclamation              and on status reason ``Host EC2*``; EXIT on anything
                                  else (user errors, exit 2/3/4/5, bugs, exit 1)
    ``--spot`` / ``--on-demand``  which *job queue* (the stack has one of each)
    ============================  =========================================================
    """

    name = "aws-batch"


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
    timeout_seconds: int = 24 * 3600
    job_role_arn: str | None = None
    log_group: str | None = None

    @property
    def resolved_vcpus(self) -> int:
        return self.vcpus or VCPUS_PER_GPU * max(self.gpus, 1)

    @property
    def resolved_memory_mib(self) -> int:
        return self.memory_mib or MEMORY_MIB_PER_GPU * max(self.gpus, 1)


# ---------------------------------------------------------------------------- sweeps


def parse_sweep(items: Sequence[str]) -> list[list[str]]:
    """``["a.b=1,2", "c=x,y"]`` -> every combination as ``--set`` lists, in a stable order
    (the first key varies slowest). No sweep: one variant without overrides."""
    from cvtrain.spec import parse_override

    axes: list[list[str]] = []
    seen: set[str] = set()
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not values.strip():
            raise UsageError(f"--sweep {item}: expected KEY=V1,V2,... such as "
                             "training.optimizer.learning_rate=0.1,0.01")
        if key in seen:
            raise UsageError(f"--sweep {item}: {key} is swept twice; give its values once")
        seen.add(key)
        parse_override(f"{key}={values.split(',')[0]}")  # the key's syntax, one clear line
        axes.append([f"{key}={v.strip()}" for v in values.split(",")])
    variants = [list(combo) for combo in itertools.product(*axes)]
    if len(variants) > MAX_ARRAY_SIZE:
        raise UsageError(f"--sweep: {len(variants)} variants; expected at most "
                         f"{MAX_ARRAY_SIZE} (AWS Batch's array size limit)")
    return variants


# ---------------------------------------------------------------------------- the spec


def encode_spec(spec_yaml: str) -> str:
    return base64.b64encode(spec_yaml.encode("utf-8")).decode("ascii")


def decode_spec(value: str) -> str:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError):
        raise UsageError(f"${ENV_SPEC}: expected a base64-encoded job spec") from None


def local_paths(spec) -> list[str]:
    """Spec values naming local files, which a Batch container cannot see (``key: value``)."""
    found = []
    path = getattr(spec.data, "path", None)
    if path and not str(path).startswith("s3://"):
        found.append(f"data.path: {path}")
    return found


# ---------------------------------------------------------------------------- definition


def retry_strategy(attempts: int) -> dict:
    """Retry spot reclamation and our SIGTERM exit code; give up on everything else.

    Batch takes the first matching condition; a failure matching none would be retried, so
    the last two conditions catch everything (``onReason`` is empty for a plain non-zero
    exit, ``onStatusReason`` never is)."""
    return {
        "attempts": attempts,
        "evaluateOnExit": [
            {"onStatusReason": "Host EC2*", "action": "RETRY"},
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


def definition_body(options: BatchOptions) -> dict:
    """``register_job_definition`` arguments without the name."""
    container: dict = {
        "image": options.image,
        "command": list(COMMAND),
        "resourceRequirements": resource_requirements(options),
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
    if options.gpus < 0 or options.attempts < 1 or options.attempts > 10:
        raise UsageError("--gpus must be >= 0 and --attempts 1..10")
    if options.timeout_seconds < 60:
        raise UsageError(f"--timeout {options.timeout_seconds} s: expected at least 60 s "
                         "(AWS Batch's minimum)")
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


def submit_job_kwargs(spec_name: str, spec_yaml: str, variants: list[list[str]],
                      definition: str, queue: str) -> dict:
    """``submit_job`` arguments: one job, or an array job with one child per variant."""
    array = len(variants) > 1
    environment = [{"name": ENV_SPEC, "value": encode_spec(spec_yaml)}]
    if any(variants):
        environment.append({"name": ENV_SWEEP,
                            "value": json.dumps(variants, separators=(",", ":"))})
    kwargs: dict = {
        "jobName": job_name(spec_name, array),
        "jobQueue": queue,
        "jobDefinition": definition,
        "containerOverrides": {"environment": environment},
        "tags": {"cvtrain:job": spec_name[:256]},
        "propagateTags": True,
    }
    if array:
        kwargs["arrayProperties"] = {"size": len(variants)}
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


def results_location(results: str, spec_name: str, run_id: str) -> str:
    return f"{results.rstrip('/')}/{spec_name}/{run_id}/"


# ---------------------------------------------------------------------------- in the container


@dataclass(frozen=True)
class EntryPlan:
    """What ``cvtrain run-batch`` does inside a Batch container."""

    spec_yaml: str
    overrides: list[str]
    run_id: str
    results: str
    index: int | None
    out: str = CONTAINER_RUNS
    notes: list[str] = field(default_factory=list)


def entry_plan(env: Mapping[str, str]) -> EntryPlan:
    """Pick the variant ``AWS_BATCH_JOB_ARRAY_INDEX`` and the stable run id from the
    container's environment; any missing or malformed variable is one clear line."""
    missing = [n for n in (ENV_SPEC, ENV_RESULTS, ENV_JOB_ID) if not env.get(n)]
    if missing:
        raise UsageError(f"run-batch: ${', $'.join(missing)} not set; expected the "
                         "environment of a job made by `cvtrain submit`")
    spec_yaml = decode_spec(env[ENV_SPEC])
    variants: list = [[]]
    if env.get(ENV_SWEEP):
        try:
            variants = json.loads(env[ENV_SWEEP])
        except ValueError:
            variants = None
        if (not isinstance(variants, list) or not variants
                or not all(isinstance(v, list) and all(isinstance(s, str) for s in v)
                           for v in variants)):
            raise UsageError(f"${ENV_SWEEP}: expected a JSON list of lists of KEY=VALUE")
    raw_index = env.get(ENV_ARRAY_INDEX)
    index = None
    if raw_index not in (None, ""):
        if not raw_index.isdigit() or int(raw_index) >= len(variants):
            raise UsageError(f"${ENV_ARRAY_INDEX}={raw_index}: expected 0..{len(variants) - 1}")
        index = int(raw_index)
    elif len(variants) > 1:
        raise UsageError(f"${ENV_ARRAY_INDEX} not set; expected it for a sweep of "
                         f"{len(variants)} variants")
    overrides = list(variants[index or 0])
    return EntryPlan(spec_yaml=spec_yaml, overrides=overrides,
                     run_id=run_id_for(env[ENV_JOB_ID], index), results=env[ENV_RESULTS],
                     index=index, out=env.get(ENV_RUNS) or CONTAINER_RUNS)


# ---------------------------------------------------------------------------- status


@dataclass(frozen=True)
class StatusRow:
    job: str
    job_id: str
    state: str
    attempts: int
    reason: str
    started: str
    duration: str


def _ms(value) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, UTC) if value else None


def format_duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _reason(job: Mapping) -> str:
    parts = []
    container = job.get("container") or {}
    attempts = job.get("attempts") or []
    last = (attempts[-1].get("container") or {}) if attempts else {}
    code = container.get("exitCode", last.get("exitCode"))
    if code not in (None, 0):
        parts.append(f"exit {code}" + (" (SIGTERM, checkpoint saved)"
                                        if code == EXIT_TERMINATED else ""))
    for text in (job.get("statusReason"), container.get("reason") or last.get("reason")):
        if text and text not in parts:
            parts.append(str(text))
    return "; ".join(parts)


def _array_summary(job: Mapping) -> str:
    summary = (job.get("arrayProperties") or {}).get("statusSummary") or {}
    size = (job.get("arrayProperties") or {}).get("size")
    counts = ", ".join(f"{n} {s.lower()}" for s, n in summary.items() if n)
    if size:
        return f"{size} children" + (f": {counts}" if counts else "")
    return counts


def status_rows(jobs: Sequence[Mapping], now: datetime | None = None
                ) -> tuple[list[StatusRow], list[str]]:
    """Table rows for ``describe_jobs`` output, and hints for jobs that look stuck."""
    now = now or datetime.now(UTC)
    rows, hints = [], []
    for job in jobs:
        state = job.get("status", "?")
        started, stopped = _ms(job.get("startedAt")), _ms(job.get("stoppedAt"))
        duration = ""
        if started:
            duration = format_duration(((stopped or now) - started).total_seconds())
        summary = _array_summary(job)
        reason = _reason(job)
        if summary:
            reason = f"{summary}" + (f"; {reason}" if reason else "")
        rows.append(StatusRow(
            job=job.get("jobName", ""), job_id=job.get("jobId", ""), state=state,
            attempts=len(job.get("attempts") or []), reason=reason,
            started=started.strftime("%Y-%m-%d %H:%M:%S") if started else "",
            duration=duration))
        created = _ms(job.get("createdAt"))
        if (state == "RUNNABLE" and created
                and (now - created).total_seconds() > RUNNABLE_HINT_SECONDS):
            waited = format_duration((now - created).total_seconds())
            hints.append(
                f"{job.get('jobId')}: RUNNABLE for {waited}: the queue's compute environments "
                "cannot place it. Check their max vCPUs (>= the job's vCPUs), instance types "
                "(a GPU type with enough GPUs and memory), spot capacity in the region "
                "(try --on-demand), and the account's EC2 vCPU quota for G instances.")
    return rows, hints
