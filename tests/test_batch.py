"""AWS Batch backend: the translation (golden files), local paths refused before any AWS
call, the in-container entry, status rendering, and :class:`BatchRunner` and the CLI
against moto's server over HTTP (Batch, ECR, CloudWatch Logs, S3, STS, CloudFormation).
No AWS account: moto runs in its own process on 127.0.0.1, with Batch's Docker-free
backend (jobs are never run).

Golden files: ``UPDATE_GOLDEN=1 python -m pytest tests/test_batch.py`` rewrites them.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import PATH_KEYS, ROOT, job_using, load_template, run_cli
from s3_server import isolate_aws_env, start_server_process, stop_server_process

from cvtrain.cloud import aws, status
from cvtrain.cloud import definitions as defs
from cvtrain.cloud.batch import (
    OUT_BUCKET,
    OUT_LOG_GROUP,
    OUT_ON_DEMAND_QUEUE,
    OUT_REPOSITORY,
    OUT_SPOT_QUEUE,
    BatchRunner,
    Target,
)
from cvtrain.cloud.entry import entry_plan
from cvtrain.errors import CloudError, StorageError, UsageError
from cvtrain.spec import SpecError, load_spec, local_paths, parse_sweep, with_values
from cvtrain.training.checkpoint import EXIT_TERMINATED

GOLDEN = Path(__file__).parent / "golden"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
REPO_URI = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/cvtrain"
TAG = "0.1.0-gpu"
BUCKET = "cvtrain-batch-test"
QUEUE = "cvtrain-spot"
OFF_QUEUE = "cvtrain-disabled"
LOG_GROUP = "/cvtrain/test"
BASENET_JOB = ROOT / "jobs" / "cifar" / "basenet.yaml"

JOB_TEXT = """\
name: tiny
data:
  dataset: cifar100
  path: s3://example-bucket/datasets/cifar-100-binary.tar.gz
  num_classes: 5
model:
  name: basenet
training:
  epochs: 2
  batch_size: 16
"""


def golden(name: str, actual) -> None:
    path = GOLDEN / name
    text = json.dumps(actual, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"{path} missing: run with UPDATE_GOLDEN=1 once"
    assert json.loads(text) == json.loads(path.read_text()), (
        f"{name} differs from the golden file; if the change is intended, rerun with "
        "UPDATE_GOLDEN=1 and review the diff")


def options(**kw) -> defs.BatchOptions:
    base = dict(image=f"{REPO_URI}:{TAG}", queue=QUEUE, results=f"s3://{BUCKET}/runs",
                gpus=1, attempts=3, timeout_seconds=6 * 3600,
                job_role_arn=f"arn:aws:iam::{ACCOUNT}:role/cvtrain-job", log_group=LOG_GROUP)
    base.update(kw)
    return defs.BatchOptions(**base)


def readable(kwargs: dict) -> dict:
    """submit_job kwargs with the spec decoded, for golden files a human can review."""
    out = json.loads(json.dumps(kwargs))
    for env in out["containerOverrides"]["environment"]:
        if env["name"] == defs.ENV_SPEC:
            env["value"] = yaml.safe_load(defs.decode_spec(env["value"]))
        elif env["name"] == defs.ENV_SWEEP:
            env["value"] = json.loads(env["value"])
    return out


@pytest.fixture
def tiny_spec(write_job):
    return load_spec(write_job("tiny.yaml", JOB_TEXT))




# ---------------------------------------------------------------------------- translation


def test_job_definition_golden():
    definition = defs.job_definition(options())
    golden("batch_job_definition.json", definition)
    assert definition["jobDefinitionName"].startswith("cvtrain-")
    # the name is a hash of the content: same content, same name; any change, another
    assert defs.job_definition(options())["jobDefinitionName"] == \
        definition["jobDefinitionName"]
    assert defs.job_definition(options(gpus=2))["jobDefinitionName"] != \
        definition["jobDefinitionName"]
    reqs = {r["type"]: r["value"] for r in defs.job_definition(
        options(gpus=2))["containerProperties"]["resourceRequirements"]}
    assert reqs == {"GPU": "2", "VCPU": "8", "MEMORY": "28000"}


def test_submission_golden_single_and_sweep(tiny_spec):
    name = defs.job_definition(options())["jobDefinitionName"]
    single = defs.submit_job_kwargs(tiny_spec.name, tiny_spec.to_yaml(), [[]], name, QUEUE)
    assert "arrayProperties" not in single
    golden("batch_submit_single.json", readable(single))

    variants = parse_sweep(["training.optimizer.learning_rate=0.1,0.01",
                            "model.dropout=0.2,0.4"])
    sweep = defs.submit_job_kwargs(tiny_spec.name, tiny_spec.to_yaml(), variants, name, QUEUE)
    assert sweep["arrayProperties"] == {"size": 4}
    golden("batch_submit_sweep.json", readable(sweep))


def test_sweeps_expand_in_the_spec_layer_up_to_the_array_limit(tiny_spec):
    backend = BatchRunner(env={})
    target = dict(queue=QUEUE, image="img", results=f"s3://{BUCKET}/runs")
    plan = backend.plan(tiny_spec, ["training.epochs=1,2", "model.dropout=0.2,0.4"], **target)
    assert [v.overrides for v in plan.variants] == [
        ["training.epochs=1", "model.dropout=0.2"], ["training.epochs=1", "model.dropout=0.4"],
        ["training.epochs=2", "model.dropout=0.2"], ["training.epochs=2", "model.dropout=0.4"]]
    assert [v.spec.training.epochs for v in plan.variants] == [1, 1, 2, 2]
    assert plan.array and plan.submit_job["arrayProperties"] == {"size": 4}
    assert plan.to_json() == {"job_definition": plan.definition, "submit_job": plan.submit_job}
    # each variant is validated before anything is sent: one line naming it
    with pytest.raises(SpecError, match="^--sweep variant 1: training.epochs"):
        backend.plan(tiny_spec, ["training.epochs=1,-1"], **target)
    # AWS Batch's array size limit: 101 * 100 = 10100 children
    assert defs.MAX_ARRAY_SIZE == 10_000
    with pytest.raises(SpecError, match="10100 variants; expected at most 10000"):
        backend.plan(tiny_spec, [f"training.epochs={','.join(map(str, range(1, 102)))}",
                                 f"training.batch_size={','.join(map(str, range(1, 101)))}"],
                     **target)


def decide(strategy: dict, exit_code: int | None, reason: str, status_reason: str) -> str:
    """AWS Batch's rule: the first matching evaluateOnExit condition; none: RETRY."""
    for cond in strategy["evaluateOnExit"]:
        checks = [("onExitCode", "" if exit_code is None else str(exit_code)),
                  ("onReason", reason), ("onStatusReason", status_reason)]
        if all(fnmatch.fnmatchcase(value, cond[key]) for key, value in checks if key in cond):
            return cond["action"]
    return "RETRY"


def test_retry_strategy_retries_spot_start_failures_and_sigterm_only():
    strategy = defs.job_definition(options(attempts=4))["retryStrategy"]
    assert strategy["attempts"] == 4 and len(strategy["evaluateOnExit"]) <= 5  # Batch's bound
    host = "Host EC2 (instance i-0123) terminated."
    assert decide(strategy, None, "", host) == "RETRY"  # spot reclaimed
    assert decide(strategy, EXIT_TERMINATED, "", "Essential container in task exited") == \
        "RETRY"
    for reason in ("CannotPullContainerError: pull image manifest has been retried 5 times",
                   "CannotStartContainerError: Error response from daemon", ""):
        assert decide(strategy, None, reason, "Task failed to start") == "RETRY"
    for code in (1, 2, 3, 4, 5, 130, 137):
        assert decide(strategy, code, "", "Essential container in task exited") == "EXIT"
    assert decide(strategy, None, "OutOfMemoryError: Container killed", "Essential container "
                  "in task exited") == "EXIT"


def test_containers_with_several_gpus_get_shared_memory_for_nccl():
    def linux(**kw):
        return defs.job_definition(options(**kw))["containerProperties"]["linuxParameters"]

    assert linux(gpus=1) == {"initProcessEnabled": True}  # Docker's 64 MB is enough there
    several = linux(gpus=4)
    assert several["initProcessEnabled"] is True
    assert several["sharedMemorySize"] == 4 * defs.MEMORY_MIB_PER_GPU // 4  # MiB, a quarter
    assert linux(gpus=2, memory_mib=8000)["sharedMemorySize"] == 2000


def test_payload_limit(tiny_spec):
    huge = tiny_spec.model_copy(update={"description": "x" * 40_000})
    with pytest.raises(UsageError, match="at most 30720"):
        defs.submit_job_kwargs(huge.name, huge.to_yaml(), [[]], "def", QUEUE)


@pytest.mark.parametrize("key, section, name", PATH_KEYS,
                         ids=[f"{key}-{name}" for key, _, name in PATH_KEYS])
def test_every_local_path_is_refused_before_the_target(key, section, name):
    """Whatever dataset or model declares a path field, a local value there is refused
    first: with no queue, image, results or stack, the target would be the next error."""
    spec = job_using(section, name)
    spec = with_values(spec, {p.key: "s3://b/elsewhere" for p in local_paths(spec)})
    spec = with_values(spec, {key: "/some/local/file"})
    backend = BatchRunner(env={})
    with pytest.raises(UsageError) as err:
        backend.plan(spec)
    assert str(err.value) == (f"{key}: /some/local/file: a local path is not visible in a "
                              "Batch container; expected an s3:// URI (upload it with "
                              "`cvtrain data push`)")
    with pytest.raises(UsageError, match="--queue, --image, --results: not given"):
        backend.plan(with_values(spec, {key: "s3://b/x"}))
    # in a sweep variant: refused naming the variant
    with pytest.raises(UsageError) as err:
        backend.plan(with_values(spec, {key: "s3://b/x"}), [f"{key}=s3://b/y,./here"])
    assert str(err.value) == f"--sweep variant 1: {key}: ./here: expected an s3:// URI"


def test_same_definition_ignores_added_defaults():
    ours = defs.job_definition(options())
    theirs = json.loads(json.dumps(ours))
    theirs["containerProperties"].update(volumes=[], mountPoints=[], secrets=[])
    theirs["retryStrategy"]["evaluateOnExit"][0]["action"] = "retry"
    theirs["revision"] = 3
    assert defs.same_definition(ours, theirs)
    theirs["containerProperties"]["image"] = "other:tag"
    assert not defs.same_definition(ours, theirs)


# ---------------------------------------------------------------------------- in the container


def entry_env(spec_yaml: str = "name: tiny\n", **extra) -> dict:
    env = {defs.ENV_SPEC: defs.encode_spec(spec_yaml), defs.ENV_RESULTS: "s3://b/runs",
           defs.ENV_JOB_ID: "1b2c-parent:2", defs.ENV_ARRAY_INDEX: "2",
           defs.ENV_SWEEP: json.dumps([["a=1"], ["a=2"], ["a=3", "b=x"]])}
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def test_entry_plan_picks_variant_and_stable_run_id():
    plan = entry_plan(entry_env())
    assert plan.overrides == ["a=3", "b=x"] and plan.index == 2
    assert plan.run_id == "1b2c-parent-2" and plan.spec_yaml == "name: tiny\n"
    # a retried attempt sees the same job id and index: the same run id, so it resumes
    assert entry_plan(entry_env(AWS_BATCH_JOB_ATTEMPT="2")).run_id == plan.run_id
    assert plan.attempt is None
    assert entry_plan(entry_env(AWS_BATCH_JOB_ATTEMPT="2")).attempt == "2"
    single = entry_plan(entry_env(AWS_BATCH_JOB_ID="plain-id", AWS_BATCH_JOB_ARRAY_INDEX=None,
                                  CVTRAIN_SWEEP=None))
    assert single.run_id == "plain-id" and single.overrides == [] and single.index is None
    assert defs.run_id_for("p:7") == "p-7" == defs.run_id_for("p", 7)


def test_backend_entry_applies_the_variant_to_the_spec():
    sweep = json.dumps([["training.epochs=3"], ["training.epochs=1", "training.batch_size=8"]])
    env = entry_env(JOB_TEXT, AWS_BATCH_JOB_ID="feed:1", AWS_BATCH_JOB_ARRAY_INDEX="1",
                    CVTRAIN_SWEEP=sweep)
    job = BatchRunner(env=env).entry()
    assert job.spec.name == "tiny" and job.spec.training.epochs == 1
    assert job.spec.training.batch_size == 8 and job.plan.run_id == "feed-1"
    assert job.run.location == "s3://b/runs/tiny/feed-1"
    bad = entry_env(JOB_TEXT, CVTRAIN_SWEEP=json.dumps([[], [], ["training.epochs=-1"]]))
    with pytest.raises(SpecError, match=r"^\$CVTRAIN_SPEC_B64: training.epochs"):
        BatchRunner(env=bad).entry()


@pytest.mark.parametrize("extra, message", [
    ({"AWS_BATCH_JOB_ARRAY_INDEX": "3"}, "expected 0..2"),
    ({"AWS_BATCH_JOB_ARRAY_INDEX": None}, "not set"),
    ({"CVTRAIN_SWEEP": "{not json"}, "JSON list"),
    ({"CVTRAIN_SPEC_B64": "***"}, "base64"),
    ({"CVTRAIN_RESULTS": None}, "CVTRAIN_RESULTS not set"),
])
def test_entry_plan_refuses_bad_environment(extra, message):
    with pytest.raises(UsageError, match=message) as err:
        entry_plan(entry_env(**extra))
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_run_batch_trains_variant_into_results(tmp_path):
    """The hidden entry through the CLI: variant 1 of a sweep, tiny synthetic data, a local
    folder as the results root, the run id from the Batch job id."""
    from cvtrain.data.cifar import write_synthetic_cifar100

    archive = write_synthetic_cifar100(tmp_path / "data", classes=5, train_per_class=8,
                                       test_per_class=2, fmt="binary", seed=1)
    spec_yaml = JOB_TEXT.replace("s3://example-bucket/datasets/cifar-100-binary.tar.gz",
                                 str(archive))
    results = tmp_path / "results"
    env = {defs.ENV_SPEC: defs.encode_spec(spec_yaml), defs.ENV_RESULTS: str(results),
           defs.ENV_RUNS: str(tmp_path / "scratch"), defs.ENV_JOB_ID: "feedbeef:1",
           defs.ENV_ARRAY_INDEX: "1", defs.ENV_ATTEMPT: "1",
           defs.ENV_SWEEP: json.dumps([["training.epochs=3"],
                                       ["training.epochs=1", "training.batch_size=8"]])}
    proc = run_cli("run-batch", env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"run id feedbeef-1, variant 1: training.epochs=1 training.batch_size=8, " \
        f"attempt 1 -> {results / 'tiny' / 'feedbeef-1'}/" in proc.stdout
    run = results / "tiny" / "feedbeef-1"
    assert (run / "manifest.json").is_file()
    spec = yaml.safe_load((run / "spec.yaml").read_text())
    assert spec["training"]["epochs"] == 1 and spec["training"]["batch_size"] == 8
    assert json.loads((run / "metrics.json").read_text())["epochs_run"] == 1


# ---------------------------------------------------------------------------- status (pure)


def ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def test_status_rows_and_runnable_hint():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    jobs = [
        {"jobName": "cvtrain-a", "jobId": "j1", "status": "RUNNING",
         "createdAt": ms(now - timedelta(hours=2)), "startedAt": ms(now - timedelta(minutes=75)),
         "attempts": [{"container": {"exitCode": EXIT_TERMINATED},
                       "statusReason": "Host EC2 (instance i-1) terminated."}]},
        {"jobName": "cvtrain-b", "jobId": "j2", "status": "RUNNABLE",
         "createdAt": ms(now - timedelta(minutes=25)), "attempts": []},
        {"jobName": "cvtrain-c", "jobId": "j3", "status": "RUNNABLE",
         "createdAt": ms(now - timedelta(minutes=2))},
        {"jobName": "cvtrain-d", "jobId": "j4", "status": "FAILED",
         "statusReason": "Essential container in task exited",
         "createdAt": ms(now - timedelta(hours=1)), "startedAt": ms(now - timedelta(minutes=30)),
         "stoppedAt": ms(now - timedelta(minutes=29, seconds=15)),
         "container": {"exitCode": 2}, "attempts": [{}]},
        {"jobName": "cvtrain-e-sweep", "jobId": "j5", "status": "PENDING",
         "arrayProperties": {"size": 4, "statusSummary": {"RUNNING": 1, "SUCCEEDED": 3,
                                                           "FAILED": 0}}},
    ]
    rows, hints = status.status_rows(jobs, now=now)
    by_id = {r.job_id: r for r in rows}
    assert by_id["j1"].duration == "1h15m" and by_id["j1"].attempts == 1
    assert "exit 75" in by_id["j1"].reason and by_id["j1"].started == "2026-01-01 10:45:00"
    assert by_id["j4"].duration == "45s" and by_id["j4"].reason.startswith("exit 2")
    assert by_id["j5"].reason == "4 children: 1 running, 3 succeeded"
    assert len(hints) == 1 and hints[0].startswith("j2: RUNNABLE for 25m00s")
    assert "max vCPUs" in hints[0] and "spot" in hints[0]


# ---------------------------------------------------------------------------- against moto


def _moto_config(url: str, config: dict) -> None:
    req = urllib.request.Request(url + "/moto-api/config", data=json.dumps(config).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


@pytest.fixture(scope="module")
def moto_url():
    """moto in its own process: Batch without Docker, a queue (and a disabled one) on an
    unmanaged compute environment with its IAM role, an ECR repository holding one image, a
    results bucket, a log group, a stack whose outputs point at all of it."""
    import boto3

    proc, url = start_server_process()
    try:
        _moto_config(url, {"batch": {"use_docker": False}})
        kw = dict(endpoint_url=url, region_name=REGION, aws_access_key_id="testing",
                  aws_secret_access_key="testing")
        iam, b = boto3.client("iam", **kw), boto3.client("batch", **kw)
        role = iam.create_role(RoleName="cvtrain-batch-service",
                               AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        ce = b.create_compute_environment(computeEnvironmentName="cvtrain-test-ce",
                                          type="UNMANAGED", state="ENABLED",
                                          serviceRole=role)["computeEnvironmentArn"]
        for name, state in ((QUEUE, "ENABLED"), (OFF_QUEUE, "DISABLED")):
            b.create_job_queue(jobQueueName=name, state=state, priority=1,
                               computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}])
        ecr = boto3.client("ecr", **kw)
        ecr.create_repository(repositoryName="cvtrain")
        manifest = {"schemaVersion": 2, "mediaType":
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                               "size": 1, "digest": "sha256:" + "0" * 64}, "layers": []}
        ecr.put_image(repositoryName="cvtrain", imageManifest=json.dumps(manifest),
                      imageTag=TAG)
        boto3.client("s3", **kw).create_bucket(Bucket=BUCKET)
        # the dataset JOB_TEXT reads (pre-flight checks that it exists)
        boto3.client("s3", **kw).create_bucket(Bucket="example-bucket")
        boto3.client("s3", **kw).put_object(Bucket="example-bucket", Body=b"x" * 1000,
                                            Key="datasets/cifar-100-binary.tar.gz")
        boto3.client("logs", **kw).create_log_group(logGroupName=LOG_GROUP)
        outputs = {OUT_BUCKET: BUCKET, OUT_REPOSITORY: REPO_URI, OUT_SPOT_QUEUE: QUEUE,
                   OUT_ON_DEMAND_QUEUE: OFF_QUEUE, OUT_LOG_GROUP: LOG_GROUP}
        template = {"Resources": {"Marker": {"Type": "AWS::S3::Bucket",
                                             "Properties": {"BucketName": "cvtrain-marker"}}},
                    "Outputs": {k: {"Value": v} for k, v in outputs.items()}}
        boto3.client("cloudformation", **kw).create_stack(
            StackName="cvtrain-test", TemplateBody=json.dumps(template))
        yield url
    finally:
        stop_server_process(proc)


@pytest.fixture
def cloud(moto_url, monkeypatch, tmp_path):
    """The environment pointing at moto (so CLI subprocesses inherit it), a fresh state dir."""
    env = isolate_aws_env(monkeypatch, tmp_path, moto_url)
    monkeypatch.setattr(aws, "_clients", {})
    env["CVTRAIN_STATE_DIR"] = str(tmp_path / "state")
    for name in ("CVTRAIN_BATCH_QUEUE", "CVTRAIN_IMAGE", "CVTRAIN_RESULTS", "CVTRAIN_STACK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CVTRAIN_STATE_DIR", env["CVTRAIN_STATE_DIR"])
    return env


def batch_client(url):
    import boto3

    return boto3.client("batch", endpoint_url=url, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def ecr_digest(url, tag):
    import boto3

    ecr = boto3.client("ecr", endpoint_url=url, region_name=REGION,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    return ecr.describe_images(repositoryName="cvtrain",
                               imageIds=[{"imageTag": tag}])["imageDetails"][0]["imageDigest"]


def submit_args(job_path, *extra):
    return ("submit", job_path, "--queue", QUEUE,
            "--image", f"{REPO_URI}:{TAG}", "--results", f"s3://{BUCKET}/runs", *extra)


@pytest.mark.slow
def test_submit_sweep_as_array_job_then_status(cloud, moto_url, write_job):
    job = write_job("tiny.yaml", JOB_TEXT)
    proc = run_cli(*submit_args(job, "--sweep", "training.optimizer.learning_rate=0.1,0.01",
                                "--gpus", "1", "--attempts", "4"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "ok  credentials: arn:aws:sts::" in out and "ok  results:" in out
    assert ("ok  data.path: s3://example-bucket/datasets/cifar-100-binary.tar.gz (1 object, "
            "1000 B)") in out
    assert "ok  job role: not known (no --stack)" in out
    assert "registered job definition arn:aws:batch:" in out
    job_id = next(line.split(": ")[1].split()[0] for line in out.splitlines()
                  if line.startswith("submitted "))
    assert f"s3://{BUCKET}/runs/tiny/{job_id}-1/" in out
    assert "training.optimizer.learning_rate=0.01" in out

    b = batch_client(moto_url)
    parent = b.describe_jobs(jobs=[job_id])["jobs"][0]
    assert parent["arrayProperties"]["size"] == 2
    env = {e["name"]: e["value"] for e in parent["container"]["environment"]}
    assert json.loads(env[defs.ENV_SWEEP]) == [["training.optimizer.learning_rate=0.1"],
                                                ["training.optimizer.learning_rate=0.01"]]
    assert yaml.safe_load(base64.b64decode(env[defs.ENV_SPEC]))["name"] == "tiny"
    assert env[defs.ENV_RESULTS] == f"s3://{BUCKET}/runs"
    definition = b.describe_job_definitions(jobDefinitions=[parent["jobDefinition"]])[
        "jobDefinitions"][0]
    assert definition["retryStrategy"]["attempts"] == 4
    assert definition["containerProperties"]["command"] == defs.COMMAND
    # the image by the digest its tag pointed to at submission, not by the (mutable) tag
    digest = ecr_digest(moto_url, TAG)
    assert definition["containerProperties"]["image"] == f"{REPO_URI}@{digest}"
    assert f"image: {REPO_URI}@{digest}" in out

    # the same definition again: reused, not registered
    again = run_cli(*submit_args(job, "--set", "training.epochs=1", "--no-check",
                                 "--attempts", "4"))
    assert again.returncode == 0, again.stderr
    assert f"reusing job definition {parent['jobDefinition']}" in again.stdout

    # status with no ids: the jobs recorded locally
    recorded = (Path(cloud["CVTRAIN_STATE_DIR"]) / "submitted.jsonl").read_text().splitlines()
    assert len(recorded) == 2 and json.loads(recorded[0])["jobId"] == job_id
    status = run_cli("status")
    assert status.returncode == 0, status.stderr
    assert job_id in status.stdout and "2 children" in status.stdout
    assert "SUCCEEDED" in status.stdout  # moto's Docker-free Batch finishes jobs at once
    as_json = json.loads(run_cli("status", f"{job_id}:1", "--json").stdout)
    assert as_json[0]["job_id"] == f"{job_id}:1" and as_json[0]["attempts"] == 1
    assert as_json[0]["image"] == f"{REPO_URI}@{digest}"
    assert f"@sha256:{digest[7:19]}" in status.stdout


@pytest.mark.slow
def test_submit_resume_continues_a_timed_out_run(cloud, moto_url, write_job, monkeypatch):
    """`submit --resume ID` (and PARENT:N for an array child) submits a new job with the
    same resolved spec (the child's variant applied), results root and run id, so the
    container resumes the run from its checkpoint; refused while the job still runs, for
    a job that succeeded, and with options that would change the run."""
    job = write_job("tiny.yaml", JOB_TEXT)
    backend = BatchRunner(env={}, version="0.1.0")
    first = backend.submit(backend.plan(load_spec(job), ["training.epochs=3,5"], queue=QUEUE,
                                        image=f"{REPO_URI}:{TAG}",
                                        results=f"s3://{BUCKET}/runs"), check=False)
    real = aws.describe_jobs
    states = {}

    def described(ids, **kw):  # moto finishes jobs at once; play how this one ended
        jobs = real(ids, **kw)
        for j in jobs:
            if j["jobId"] in states:
                j["status"], j["statusReason"] = states[j["jobId"]]
        return jobs

    monkeypatch.setattr(aws, "describe_jobs", described)
    child = f"{first.job_id}:1"
    options = dict(queue=QUEUE, image=f"{REPO_URI}:{TAG}", timeout_seconds=12 * 3600)
    states[child] = ("RUNNING", "")
    with pytest.raises(UsageError, match="is RUNNING; wait for it to end or cancel it"):
        backend.plan_resume(child, **options)
    states[child] = ("SUCCEEDED", "")
    with pytest.raises(UsageError, match="SUCCEEDED; its run is complete"):
        backend.plan_resume(child, **options)
    with pytest.raises(UsageError, match="an array job; resume its children"):
        backend.plan_resume(first.job_id, **options)
    states[child] = ("FAILED", "Job attempt duration exceeded timeout")
    with pytest.raises(UsageError, match="a resumed run stays there"):
        backend.plan_resume(child, results="s3://elsewhere/runs", **options)

    plan = backend.plan_resume(child, **options)
    assert plan.resumes == f"{first.job_id}-1" and not plan.array
    done = backend.submit(plan, check=False)
    assert done.children[0].run.run_id == f"{first.job_id}-1"
    assert done.children[0].run.location == f"s3://{BUCKET}/runs/tiny/{first.job_id}-1"
    # what the new container will do: the same run id, the child's variant, the results
    new = batch_client(moto_url).describe_jobs(jobs=[done.job_id])["jobs"][0]
    env = {e["name"]: e["value"] for e in new["container"]["environment"]}
    definition = batch_client(moto_url).describe_job_definitions(
        jobDefinitions=[new["jobDefinition"]])["jobDefinitions"][0]
    assert definition["timeout"]["attemptDurationSeconds"] == 12 * 3600
    env.update({e["name"]: e["value"]
                for e in definition["containerProperties"]["environment"]})
    entry = entry_plan({**env, defs.ENV_JOB_ID: done.job_id})
    assert entry.run_id == f"{first.job_id}-1" and entry.results == f"s3://{BUCKET}/runs"
    assert yaml.safe_load(entry.spec_yaml)["training"]["epochs"] == 5 and not entry.overrides

    # a resumed job that stops again resumes the same run once more
    states[done.job_id] = ("FAILED", "Job attempt duration exceeded timeout")
    assert backend.plan_resume(done.job_id, **options).resumes == f"{first.job_id}-1"

    # the CLI: JOB and --resume do not go together
    proc = run_cli("submit", job, "--resume", child, "--queue", QUEUE)
    assert proc.returncode == 2 and "give no JOB" in proc.stderr


def _template_job_role_policy(bucket: str) -> dict:
    """The job role's policy as infra/cvtrain.yaml writes it, for ``bucket`` and the
    template's default prefixes (CloudFormation's short tags read as plain values)."""
    template = load_template(ROOT / "infra" / "cvtrain.yaml")
    params = template["Parameters"]
    policy = template["Resources"]["JobRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    text = (json.dumps(policy).replace("${Bucket.Arn}", f"arn:aws:s3:::{bucket}")
            .replace('"Bucket.Arn"', f'"arn:aws:s3:::{bucket}"')
            .replace("${DatasetsPrefix}", params["DatasetsPrefix"]["Default"])
            .replace("${RunsPrefix}", params["RunsPrefix"]["Default"]))
    return json.loads(text)


def test_job_role_policy_evaluation():
    from cvtrain.cloud import access

    docs = [_template_job_role_policy("b")]
    assert access.decide(docs, "s3:GetObject", "arn:aws:s3:::b/datasets/c.tar.gz") == "allowed"
    assert access.decide(docs, "S3:getobject", "arn:aws:s3:::b/runs/x/y") == "allowed"
    assert access.decide(docs, "s3:GetObject", "arn:aws:s3:::b/other/c") == "not granted"
    assert access.decide(docs, "s3:PutObject", "arn:aws:s3:::b/datasets/c") == "not granted"
    listing = "arn:aws:s3:::b"
    assert access.decide(docs, "s3:ListBucket", listing, {"s3:prefix": "runs/j/"}) == "allowed"
    assert access.decide(docs, "s3:ListBucket", listing, {"s3:prefix": "else/"}) == "not granted"
    assert access.decide(docs, "s3:ListBucket", listing) == "not granted"  # no prefix given
    deny = {"Statement": [{"Effect": "Deny", "Action": "s3:*",
                           "Resource": "arn:aws:s3:::b/datasets/secret*"}]}
    assert access.decide(docs + [deny], "s3:GetObject",
                         "arn:aws:s3:::b/datasets/secret.tar") == "denied"
    odd = {"Statement": {"Effect": "Allow", "Action": "s3:*", "Resource": "*",
                         "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}}
    assert access.decide([odd], "s3:GetObject", "arn:aws:s3:::x/y") == "unknown"
    everything_but = {"Statement": [{"Effect": "Allow", "NotAction": "s3:Delete*",
                                     "Resource": "*"}]}
    assert access.decide([everything_but], "s3:GetObject", "arn:aws:s3:::x/y") == "allowed"
    assert access.decide([everything_but], "s3:DeleteObject", "arn:aws:s3:::x/y") == \
        "not granted"


def test_preflight_checks_inputs_and_what_the_job_role_may_do(cloud, moto_url):
    """Data and weights URIs must exist, and the job role (the stack's policy, in moto's
    IAM) must be able to read them and to write the results: one line naming the URI, the
    action and the resource; exit 5."""
    import boto3

    kw = dict(endpoint_url=moto_url, region_name=REGION)
    s3 = boto3.client("s3", **kw)
    for key in ("datasets/cifar.tar.gz", "other/cifar.tar.gz", "datasets/w/a.weights.h5",
                "datasets/w/b.weights.h5"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x" * 10)
    iam = boto3.client("iam", **kw)
    role = iam.create_role(RoleName="cvtrain-job-preflight", AssumeRolePolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": []}))["Role"]["Arn"]
    iam.put_role_policy(RoleName="cvtrain-job-preflight", PolicyName="cvtrain-bucket-prefixes",
                        PolicyDocument=json.dumps(_template_job_role_policy(BUCKET)))
    target = Target(queue=QUEUE, image=f"{REPO_URI}:{TAG}", results=f"s3://{BUCKET}/runs",
                    job_role_arn=role)
    spec = load_spec(BASENET_JOB, ["data.num_classes=5",
                                   f"data.path=s3://{BUCKET}/datasets/cifar.tar.gz"])
    lines = BatchRunner.preflight(target, [spec])
    assert f"data.path: s3://{BUCKET}/datasets/cifar.tar.gz (1 object, 10 B)" in lines
    assert lines[-1] == f"job role: {role} may read the inputs and write s3://{BUCKET}/runs"

    elsewhere = with_values(spec, {"data.path": f"s3://{BUCKET}/other/cifar.tar.gz"})
    with pytest.raises(CloudError) as info:
        BatchRunner.preflight(target, [spec, elsewhere])  # a sweep variant reads elsewhere
    assert str(info.value) == (f"data.path s3://{BUCKET}/other/cifar.tar.gz: the job role "
                               f"{role} does not allow s3:GetObject on "
                               f"arn:aws:s3:::{BUCKET}/other/cifar.tar.gz")
    assert info.value.exit_code == 5

    with pytest.raises(CloudError, match=r"results s3://.*/elsewhere: the job role .* does not "
                                         r"allow s3:PutObject on arn:aws:s3:::.*/elsewhere/"):
        BatchRunner.preflight(Target(**{**target.__dict__,
                                         "results": f"s3://{BUCKET}/elsewhere"}), [spec])

    missing = with_values(spec, {"data.path": f"s3://{BUCKET}/datasets/nope.tar.gz"})
    with pytest.raises(CloudError, match="data.path: s3://.*/nope.tar.gz: no such object"):
        BatchRunner.preflight(target, [missing])

    # a folder: listed under its prefix, one of its objects read
    folder = with_values(spec, {"data.path": f"s3://{BUCKET}/datasets/w"})
    lines = BatchRunner.preflight(target, [folder])
    assert f"data.path: s3://{BUCKET}/datasets/w (2 objects, 20 B)" in lines


def test_gpus_beyond_what_the_queue_s_instances_have_are_refused(cloud, moto_url):
    """--gpus N against the instance types of the queue's managed compute environments
    (moto's EC2 and Batch): more than any of them has is one line, exit 5; unknown types
    ("optimal") or unmanaged environments are not judged."""
    import boto3

    assert defs.max_gpus(["g4dn", "g5.2xlarge"]) == 8
    assert defs.max_gpus(["g5.xlarge", "g5.12xlarge"]) == 4
    assert defs.max_gpus(["g5", "optimal"]) is None and defs.max_gpus(["g5.huge"]) is None

    kw = dict(endpoint_url=moto_url, region_name=REGION)
    ec2, iam, b = (boto3.client(n, **kw) for n in ("ec2", "iam", "batch"))
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="gpu-test", Description="t", VpcId=vpc)["GroupId"]
    profile = iam.create_instance_profile(InstanceProfileName="gpu-test")["InstanceProfile"]
    service = iam.get_role(RoleName="cvtrain-batch-service")["Role"]["Arn"]
    ce = b.create_compute_environment(
        computeEnvironmentName="gpu-test-ce", type="MANAGED", state="ENABLED",
        serviceRole=service,
        computeResources={"type": "EC2", "minvCpus": 0, "maxvCpus": 64, "desiredvCpus": 0,
                          "instanceTypes": ["g4dn", "g5.2xlarge"], "subnets": [subnet],
                          "securityGroupIds": [sg], "instanceRole": profile["Arn"]},
    )["computeEnvironmentArn"]
    b.create_job_queue(jobQueueName="gpu-test-queue", state="ENABLED", priority=1,
                       computeEnvironmentOrder=[{"order": 1, "computeEnvironment": ce}])
    target = Target(queue="gpu-test-queue", image=f"{REPO_URI}:{TAG}",
                    results=f"s3://{BUCKET}/runs")
    with pytest.raises(CloudError) as info:
        BatchRunner.preflight(target, [], gpus=16)
    assert str(info.value) == ("--gpus 16: the instance types of queue gpu-test-queue (g4dn, "
                               "g5.2xlarge) have at most 8 GPUs; the job would wait RUNNABLE "
                               "for ever")
    assert BatchRunner.preflight(target, [], gpus=8)[1].startswith("queue: gpu-test-queue")
    # the unmanaged test queue says nothing of its instances: not judged
    assert BatchRunner.preflight(Target(**{**target.__dict__, "queue": QUEUE}), [], gpus=16)


def test_submit_from_stack_outputs_and_dry_run(cloud, write_job):
    backend = BatchRunner(env={}, version="0.1.0")
    target = backend.resolve_target(stack="cvtrain-test")
    assert target == Target(queue=QUEUE, image=f"{REPO_URI}:{TAG}",
                            results=f"s3://{BUCKET}/runs", log_group=LOG_GROUP)
    assert backend.resolve_target(spot=False, stack="cvtrain-test").queue == OFF_QUEUE
    assert BatchRunner(env={"CVTRAIN_STACK": "cvtrain-test", "CVTRAIN_BATCH_QUEUE": "q"},
                        version="0.1.0").resolve_target() == \
        Target(queue="q", image=target.image, results=target.results, log_group=LOG_GROUP)
    with pytest.raises(CloudError, match="no such CloudFormation stack"):
        backend.resolve_target(stack="nope")
    with pytest.raises(UsageError, match="--queue, --image, --results: not given"):
        backend.resolve_target()

    job = write_job("tiny.yaml", JOB_TEXT)
    proc = run_cli("submit", job, "--stack", "cvtrain-test", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    props = plan["job_definition"]["containerProperties"]
    assert props["image"] == f"{REPO_URI}:0.1.0-gpu"
    assert props["logConfiguration"]["options"]["awslogs-group"] == LOG_GROUP
    assert plan["submit_job"]["jobQueue"] == QUEUE


def test_submit_json_prints_the_ids_alone(cloud, moto_url, write_job):
    """`submit --json`: one JSON document on stdout (ids, runs, results) for scripts, no
    prose around it; the ids are Batch's own."""
    job = write_job("tiny.yaml", JOB_TEXT)
    proc = run_cli(*submit_args(job, "--sweep", "training.epochs=1,2", "--no-check", "--json"))
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout)  # the whole of stdout parses
    parent = batch_client(moto_url).describe_jobs(jobs=[done["job_id"]])["jobs"][0]
    assert parent["jobName"] == done["job_name"] and done["array"] is True
    assert done["job_definition"] == parent["jobDefinition"]
    assert [r["job_id"] for r in done["runs"]] == [f"{done['job_id']}:0", f"{done['job_id']}:1"]
    assert done["runs"][1]["overrides"] == ["training.epochs=2"]
    assert done["runs"][1]["results"] == f"s3://{BUCKET}/runs/tiny/{done['job_id']}-1/"


def test_backend_from_python_submits_observes_and_cancels(cloud, moto_url, write_job):
    """BatchRunner without the CLI: plan from the stack, submit, status, logs, cancel."""
    backend = BatchRunner(version="0.1.0")
    spec = load_spec(write_job("tiny.yaml", JOB_TEXT))
    plan = backend.plan(spec, ["training.epochs=1,2"], stack="cvtrain-test", gpus=0,
                        attempts=2)
    assert plan.target.queue == QUEUE and plan.array
    done = backend.submit(plan)
    assert [c.split(":")[0] for c in done.checks] == ["credentials", "queue", "image",
                                                       "results", "data.path", "job role"]
    assert done.registered and done.definition_arn.startswith("arn:aws:batch:")
    assert done.array and done.job_name == "cvtrain-tiny-sweep"
    assert [(c.index, c.overrides, c.run.run_id) for c in done.children] == [
        (0, ["training.epochs=1"], f"{done.job_id}-0"),
        (1, ["training.epochs=2"], f"{done.job_id}-1")]
    assert done.children[1].run.location == f"s3://{BUCKET}/runs/tiny/{done.job_id}-1"

    parent = batch_client(moto_url).describe_jobs(jobs=[done.job_id])["jobs"][0]
    assert parent["arrayProperties"]["size"] == 2 and parent["jobQueue"].endswith(QUEUE)
    assert parent["jobDefinition"] == done.definition_arn

    again = backend.submit(backend.plan(spec, stack="cvtrain-test", gpus=0, attempts=2),
                           check=False)
    assert not again.registered and again.definition_arn == done.definition_arn
    assert again.checks == [] and not again.array
    assert again.children[0].run.run_id == again.job_id

    report = backend.status()
    assert [r.job_id for r in report.rows] == [done.job_id, again.job_id]
    assert report.record == Path(cloud["CVTRAIN_STATE_DIR"]) / "submitted.jsonl"
    assert backend.status([f"{done.job_id}:1"]).rows[0].job_id == f"{done.job_id}:1"
    with pytest.raises(UsageError, match="an array job has no log of its own"):
        list(backend.logs(done.job_id))
    backend.cancel(again.job_id, "test")
    with pytest.raises(CloudError, match="job nope: no such AWS Batch job"):
        backend.cancel("nope")


def test_status_with_nothing_recorded(cloud):
    report = BatchRunner().status()
    assert report.nothing_recorded and report.rows == []
    assert report.record == Path(cloud["CVTRAIN_STATE_DIR"]) / "submitted.jsonl"
    proc = run_cli("status")
    assert proc.returncode == 0 and proc.stdout.startswith("no jobs submitted from here yet")


@pytest.mark.parametrize("change, code, message", [
    (("--queue", "no-such-queue"), 5, "job queue no-such-queue: no such AWS Batch job queue"),
    (("--queue", OFF_QUEUE), 5, "state DISABLED"),
    (("--image", f"{REPO_URI}:missing-tag"), 5, "missing-tag is not in ECR repository cvtrain"),
    (("--image", f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/nope:1"), 5,
     "no ECR repository nope"),
    (("--results", "s3://no-such-bucket-cvtrain/runs"), 4, "no such bucket no-such-bucket"),
    (("--results", "/local/folder"), 2, "expected an s3://bucket/prefix URI"),
    (("--set", "data.path=/home/me/cifar.tar.gz"), 2, "data.path: /home/me/cifar.tar.gz"),
])
@pytest.mark.slow
def test_presubmit_checks_fail_cleanly(cloud, moto_url, write_job, change, code, message):
    job = write_job("tiny.yaml", JOB_TEXT)
    args = list(submit_args(job))
    if change[0] in args and change[0] != "--set":
        args[args.index(change[0]) + 1] = change[1]
    else:
        args += list(change)
    proc = run_cli(*args)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cvtrain: error: "), proc.stderr
    assert message in lines[0] and "Traceback" not in proc.stderr
    assert "submitted" not in proc.stdout


@pytest.fixture
def no_aws(monkeypatch, tmp_path):
    """No credentials, no configuration, an endpoint nothing listens on: any AWS call would
    fail with a credentials or connection error, not with the message a test expects."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL_S3",
                 "CVTRAIN_BATCH_QUEUE", "CVTRAIN_IMAGE", "CVTRAIN_RESULTS", "CVTRAIN_STACK"):
        monkeypatch.delenv(name, raising=False)
    env = {"AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_DEFAULT_REGION": REGION, "CVTRAIN_STATE_DIR": str(tmp_path / "state")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return tmp_path / "state"


def refused(proc, state) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == "" and not state.exists()  # nothing checked, sent or recorded
    return lines[0]


@pytest.mark.slow
def test_submit_refuses_local_weights_before_any_aws_call(no_aws):
    """A birds job with a local weights file: refused like a local data.path, before the
    stack's outputs are read (--stack is given: reading it would fail to connect)."""
    proc = run_cli("submit", "resnet50_finetune", "--stack", "cvtrain-test",
                   "--set", "model.weights=/some/local/file.weights.h5",
                   "--set", "data.path=s3://b/birds.tgz")
    assert refused(proc, no_aws) == (
        "cvtrain: error: model.weights: /some/local/file.weights.h5: a local path is not "
        "visible in a Batch container; expected an s3:// URI (upload it with `cvtrain data "
        "push`)")
    # and without the local path, the same command does reach for AWS (and fails there)
    proc = run_cli("submit", "resnet50_finetune", "--stack", "cvtrain-test",
                   "--set", "data.path=s3://b/birds.tgz")
    assert proc.returncode == 5 and "stack cvtrain-test" in proc.stderr, proc.stderr


def test_submit_refuses_a_sweep_variant_with_a_local_path(no_aws, write_job):
    job = write_job("tiny.yaml", JOB_TEXT)
    proc = run_cli("submit", job, "--stack", "cvtrain-test", "--sweep",
                   "data.path=s3://b/c.tar.gz,/home/me/c.tar.gz", "--sweep", "seed=1,2")
    assert refused(proc, no_aws) == ("cvtrain: error: --sweep variant 2: data.path: "
                                     "/home/me/c.tar.gz: expected an s3:// URI")


@pytest.mark.slow
def test_bad_credentials_and_unreachable_endpoint(monkeypatch, tmp_path):
    """A moto server that authenticates (INITIAL_NO_AUTH_ACTION_COUNT=0) refuses our fake
    keys; a closed port is an unreachable endpoint. Both: one line, exit 5."""
    proc, url = start_server_process({"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    try:
        isolate_aws_env(monkeypatch, tmp_path, url, key="AKIAFAKEFAKEFAKE", secret="nope")
        monkeypatch.setattr(aws, "_clients", {})
        with pytest.raises(CloudError, match="access denied with the configured AWS "
                                             "credentials") as err:
            aws.check_credentials()
        assert "nope" not in str(err.value)
    finally:
        stop_server_process(proc)
    isolate_aws_env(monkeypatch, tmp_path, "http://127.0.0.1:9")
    monkeypatch.setattr(aws, "MAX_ATTEMPTS", 1)  # no backoff against a closed port
    monkeypatch.setattr(aws, "_clients", {})
    with pytest.raises(CloudError, match="cannot reach http://127.0.0.1:9"):
        aws.check_credentials()


def test_check_functions_in_process(cloud):
    assert aws.check_credentials().startswith("arn:aws:sts::")
    assert aws.check_queue(QUEUE)["state"] == "ENABLED"
    assert aws.check_image(f"{REPO_URI}:{TAG}").startswith("sha256:")
    assert aws.check_image("docker.io/library/cvtrain:latest") is None  # not ECR: unchecked
    aws.check_bucket(f"s3://{BUCKET}/runs")
    with pytest.raises(StorageError):
        aws.check_bucket("s3://no-such-bucket-cvtrain")


@pytest.mark.slow
def test_logs_and_cancel(cloud, moto_url):
    import boto3

    definition = defs.job_definition(options())
    arn, registered = aws.ensure_job_definition(definition)
    assert aws.ensure_job_definition(definition) == (arn, False)
    made = aws.submit({"jobName": "cvtrain-logs", "jobQueue": QUEUE, "jobDefinition": arn})
    job = aws.describe_jobs([made["jobId"]])[0]
    group, stream = aws.log_location(job)
    assert group == LOG_GROUP and stream
    logs = boto3.client("logs", endpoint_url=moto_url, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = ms(datetime.now(UTC))
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
        {"timestamp": now, "message": "epoch 1/2"}, {"timestamp": now + 1, "message": "done"}])

    proc = run_cli("logs", made["jobId"], "--follow")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["epoch 1/2", "done"]

    proc = run_cli("cancel", made["jobId"], "--reason", "test")
    assert proc.returncode == 0 and f"cancelled {made['jobId']}" in proc.stdout
    proc = run_cli("cancel", "no-such-job")
    assert proc.returncode == 5 and "no such AWS Batch job" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_logs_follow_each_attempt_into_its_own_stream(cloud, moto_url, monkeypatch):
    """A retry (spot reclaim, exit 75) logs to a new stream: --follow reads the old one to
    its end (lines written after the last poll included), then the new one from its own
    start, never with the old stream's token. The job's attempts are played by
    describe_jobs; the logs are moto's CloudWatch Logs."""
    import boto3

    logs = boto3.client("logs", endpoint_url=moto_url, region_name=REGION,
                        aws_access_key_id="testing", aws_secret_access_key="testing")
    group = LOG_GROUP
    try:
        logs.create_log_group(logGroupName=group)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    first, second = "cvtrain/default/attempt-1", "cvtrain/default/attempt-2"
    for stream in (first, second):
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = ms(datetime.now(UTC))

    def put(stream, *messages):
        nonlocal now
        now += 10
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
            {"timestamp": now + i, "message": m} for i, m in enumerate(messages)])

    def job(status, attempts, current):
        return {"jobId": "j1", "status": status,
                "attempts": [{"container": {"logStreamName": a}} for a in attempts],
                "container": {"logStreamName": current, "logConfiguration": {
                    "logDriver": "awslogs", "options": {"awslogs-group": group}}}}

    put(first, "epoch 1/3")
    states = iter([
        job("RUNNING", [], first),
        job("RUNNING", [first], second),       # reclaimed; the retry has started
        job("SUCCEEDED", [first, second], second),
    ])
    monkeypatch.setattr(aws, "describe_jobs", lambda ids, **kw: [next(states)])
    polls = iter([
        # the first attempt's last lines land after the first poll; the retry begins
        lambda: (put(first, "epoch 2/3", "cvtrain: stopped (exit 75)"),
                 put(second, "resumed at epoch 2", "epoch 3/3")),
        lambda: put(second, "done"),
    ])
    lines = list(aws.log_lines("j1", follow=True, sleep=lambda s: next(polls)()))
    assert lines == ["epoch 1/3", "epoch 2/3", "cvtrain: stopped (exit 75)",
                     f"-- attempt 2 of job j1: log stream {second}",
                     "resumed at epoch 2", "epoch 3/3", "done"]


def test_array_parent_has_no_log(cloud):
    arn, _ = aws.ensure_job_definition(defs.job_definition(options()))
    made = aws.submit({"jobName": "cvtrain-arr", "jobQueue": QUEUE, "jobDefinition": arn,
                       "arrayProperties": {"size": 2}})
    with pytest.raises(UsageError, match=f"e.g. {made['jobId']}:0"):
        list(BatchRunner().logs(made["jobId"]))


def test_cloud_commands_do_not_import_boto3_for_help():
    code = ("import sys\nfrom cvtrain.cli import app\n"
            "print([m for m in ('boto3', 'tensorflow') if m in sys.modules])")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.slow
def test_submit_a_set_as_one_array_job(cloud, moto_url, write_job):
    """`submit JOB JOB`: one array job, a child per job in the order given, each child's
    own resolved spec (--set for all, DATASET:KEY=VALUE for one dataset's) in the
    container's environment; each writes its own run under its job's name."""
    one = write_job("tiny.yaml", JOB_TEXT)
    two = write_job("other.yaml", JOB_TEXT.replace("name: tiny", "name: other"))
    proc = run_cli(*submit_args(one, two, "--set", "training.epochs=1", "--set",
                                "cifar100:training.batch_size=8", "--no-check", "--json"))
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout)
    assert done["array"] is True and done["job_name"] == "cvtrain-set-tiny-and-1-more"
    assert [(r["job"], r["results"]) for r in done["runs"]] == [
        ("tiny", f"s3://{BUCKET}/runs/tiny/{done['job_id']}-0/"),
        ("other", f"s3://{BUCKET}/runs/other/{done['job_id']}-1/")]
    parent = batch_client(moto_url).describe_jobs(jobs=[done["job_id"]])["jobs"][0]
    assert parent["arrayProperties"]["size"] == 2
    env = {e["name"]: e["value"] for e in parent["container"]["environment"]}
    assert defs.ENV_SPEC not in env and defs.ENV_SWEEP not in env
    for index, name in enumerate(("tiny", "other")):
        entry = BatchRunner({**env, defs.ENV_JOB_ID: done["job_id"],
                              defs.ENV_ARRAY_INDEX: str(index)}).entry()
        assert entry.spec.name == name and entry.plan.run_id == f"{done['job_id']}-{index}"
        assert (entry.spec.training.epochs, entry.spec.training.batch_size) == (1, 8)
        assert entry.run.location == f"s3://{BUCKET}/runs/{name}/{done['job_id']}-{index}"

    text = run_cli(*submit_args(one, two, "--no-check"))
    assert text.returncode == 0, text.stderr
    assert "(array of 2 jobs)" in text.stdout and ":1  other  -> s3://" in text.stdout
    sweep = run_cli(*submit_args(one, two, "--sweep", "training.epochs=1,2"))
    assert sweep.returncode == 2
    assert "--sweep: one job at a time; 2 jobs were given" in sweep.stderr


def test_a_set_entry_refuses_a_bad_spec_list():
    env = {defs.ENV_SPECS: defs.encode_specs(["a: 1", "b: 2"]), defs.ENV_RESULTS: "s3://b/r",
           defs.ENV_JOB_ID: "job"}
    assert entry_plan({**env, defs.ENV_ARRAY_INDEX: "1"}).spec_yaml == "b: 2"
    with pytest.raises(UsageError, match="expected 0..1"):
        entry_plan({**env, defs.ENV_ARRAY_INDEX: "2"})
    with pytest.raises(UsageError, match="compressed list of job specs"):
        entry_plan({**env, defs.ENV_SPECS: "bm90IHpsaWI=", defs.ENV_ARRAY_INDEX: "0"})
