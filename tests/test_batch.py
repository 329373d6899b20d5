"""AWS Batch backend: the translation (golden files), the in-container entry, status
rendering, and the API calls against moto's server over HTTP (Batch, ECR, CloudWatch Logs,
S3, STS, CloudFormation). No AWS account: moto runs in its own process on 127.0.0.1, with
Batch's Docker-free backend (jobs are never run).

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
from conftest import run_cli
from s3_server import isolate_aws_env, start_server_process, stop_server_process

from cvtrain.checkpoint import EXIT_TERMINATED
from cvtrain.cloud import aws, batch
from cvtrain.errors import CloudError, StorageError, UsageError

GOLDEN = Path(__file__).parent / "golden"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
REPO_URI = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/cvtrain"
TAG = "0.1.0-gpu"
BUCKET = "cvtrain-batch-test"
QUEUE = "cvtrain-spot"
OFF_QUEUE = "cvtrain-disabled"
LOG_GROUP = "/cvtrain/test"

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


def options(**kw) -> batch.BatchOptions:
    base = dict(image=f"{REPO_URI}:{TAG}", queue=QUEUE, results=f"s3://{BUCKET}/runs",
                gpus=1, attempts=3, timeout_seconds=6 * 3600,
                job_role_arn=f"arn:aws:iam::{ACCOUNT}:role/cvtrain-job", log_group=LOG_GROUP)
    base.update(kw)
    return batch.BatchOptions(**base)


def readable(kwargs: dict) -> dict:
    """submit_job kwargs with the spec decoded, for golden files a human can review."""
    out = json.loads(json.dumps(kwargs))
    for env in out["containerOverrides"]["environment"]:
        if env["name"] == batch.ENV_SPEC:
            env["value"] = yaml.safe_load(batch.decode_spec(env["value"]))
        elif env["name"] == batch.ENV_SWEEP:
            env["value"] = json.loads(env["value"])
    return out


@pytest.fixture
def tiny_spec(write_job):
    from cvtrain.spec import load_spec

    return load_spec(write_job("tiny.yaml", JOB_TEXT))


# ---------------------------------------------------------------------------- translation


def test_job_definition_golden():
    definition = batch.job_definition(options())
    golden("batch_job_definition.json", definition)
    assert definition["jobDefinitionName"].startswith("cvtrain-")
    # the name is a hash of the content: same content, same name; any change, another
    assert batch.job_definition(options())["jobDefinitionName"] == \
        definition["jobDefinitionName"]
    assert batch.job_definition(options(gpus=2))["jobDefinitionName"] != \
        definition["jobDefinitionName"]
    reqs = {r["type"]: r["value"] for r in batch.job_definition(
        options(gpus=2))["containerProperties"]["resourceRequirements"]}
    assert reqs == {"GPU": "2", "VCPU": "8", "MEMORY": "28000"}


def test_submission_golden_single_and_sweep(tiny_spec):
    name = batch.job_definition(options())["jobDefinitionName"]
    single = batch.submit_job_kwargs(tiny_spec.name, tiny_spec.to_yaml(), [[]], name, QUEUE)
    assert "arrayProperties" not in single
    golden("batch_submit_single.json", readable(single))

    variants = batch.parse_sweep(["training.optimizer.learning_rate=0.1,0.01",
                                  "model.dropout=0.2,0.4"])
    sweep = batch.submit_job_kwargs(tiny_spec.name, tiny_spec.to_yaml(), variants, name, QUEUE)
    assert sweep["arrayProperties"] == {"size": 4}
    golden("batch_submit_sweep.json", readable(sweep))


def test_parse_sweep():
    assert batch.parse_sweep([]) == [[]]
    assert batch.parse_sweep(["a.b=1,2", "c=x,y"]) == [
        ["a.b=1", "c=x"], ["a.b=1", "c=y"], ["a.b=2", "c=x"], ["a.b=2", "c=y"]]
    for bad in (["nokey"], ["a.b="], ["a b=1,2"], ["a=1", "a=2"]):
        with pytest.raises(UsageError) as err:
            batch.parse_sweep(bad)
        assert "\n" not in str(err.value)


def decide(strategy: dict, exit_code: int | None, reason: str, status_reason: str) -> str:
    """AWS Batch's rule: the first matching evaluateOnExit condition; none: RETRY."""
    for cond in strategy["evaluateOnExit"]:
        checks = [("onExitCode", "" if exit_code is None else str(exit_code)),
                  ("onReason", reason), ("onStatusReason", status_reason)]
        if all(fnmatch.fnmatchcase(value, cond[key]) for key, value in checks if key in cond):
            return cond["action"]
    return "RETRY"


def test_retry_strategy_retries_spot_and_sigterm_only():
    strategy = batch.job_definition(options(attempts=4))["retryStrategy"]
    assert strategy["attempts"] == 4 and len(strategy["evaluateOnExit"]) <= 5
    host = "Host EC2 (instance i-0123) terminated."
    assert decide(strategy, None, "", host) == "RETRY"  # spot reclaimed
    assert decide(strategy, EXIT_TERMINATED, "", "Essential container in task exited") == \
        "RETRY"
    for code in (1, 2, 3, 4, 5, 130, 137):
        assert decide(strategy, code, "", "Essential container in task exited") == "EXIT"
    assert decide(strategy, None, "CannotPullContainerError: x", "Task failed") == "EXIT"


def test_payload_limit_and_local_paths(tiny_spec):
    huge = tiny_spec.model_copy(update={"description": "x" * 40_000})
    with pytest.raises(UsageError, match="at most 30720"):
        batch.submit_job_kwargs(huge.name, huge.to_yaml(), [[]], "def", QUEUE)
    local = tiny_spec.model_copy(update={"data": tiny_spec.data.model_copy(
        update={"path": "/home/me/cifar.tar.gz"})})
    assert batch.local_paths(local) == ["data.path: /home/me/cifar.tar.gz"]
    assert batch.local_paths(tiny_spec) == []


def test_same_definition_ignores_added_defaults():
    ours = batch.job_definition(options())
    theirs = json.loads(json.dumps(ours))
    theirs["containerProperties"].update(volumes=[], mountPoints=[], secrets=[])
    theirs["retryStrategy"]["evaluateOnExit"][0]["action"] = "retry"
    theirs["revision"] = 3
    assert batch.same_definition(ours, theirs)
    theirs["containerProperties"]["image"] = "other:tag"
    assert not batch.same_definition(ours, theirs)


# ---------------------------------------------------------------------------- in the container


def entry_env(**extra) -> dict:
    spec = batch.encode_spec("name: tiny\n")
    env = {batch.ENV_SPEC: spec, batch.ENV_RESULTS: "s3://b/runs",
           batch.ENV_JOB_ID: "1b2c-parent:2", batch.ENV_ARRAY_INDEX: "2",
           batch.ENV_SWEEP: json.dumps([["a=1"], ["a=2"], ["a=3", "b=x"]])}
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def test_entry_plan_picks_variant_and_stable_run_id():
    plan = batch.entry_plan(entry_env())
    assert plan.overrides == ["a=3", "b=x"] and plan.index == 2
    assert plan.run_id == "1b2c-parent-2" and plan.spec_yaml == "name: tiny\n"
    # a retried attempt sees the same job id and index: the same run id, so it resumes
    assert batch.entry_plan(entry_env(AWS_BATCH_JOB_ATTEMPT="2")).run_id == plan.run_id
    single = batch.entry_plan(entry_env(AWS_BATCH_JOB_ID="plain-id", AWS_BATCH_JOB_ARRAY_INDEX=None,
                                        CVTRAIN_SWEEP=None))
    assert single.run_id == "plain-id" and single.overrides == [] and single.index is None
    assert batch.run_id_for("p:7") == "p-7" == batch.run_id_for("p", 7)


@pytest.mark.parametrize("extra, message", [
    ({"AWS_BATCH_JOB_ARRAY_INDEX": "3"}, "expected 0..2"),
    ({"AWS_BATCH_JOB_ARRAY_INDEX": None}, "not set"),
    ({"CVTRAIN_SWEEP": "{not json"}, "JSON list"),
    ({"CVTRAIN_SPEC_B64": "***"}, "base64"),
    ({"CVTRAIN_RESULTS": None}, "CVTRAIN_RESULTS not set"),
])
def test_entry_plan_refuses_bad_environment(extra, message):
    with pytest.raises(UsageError, match=message) as err:
        batch.entry_plan(entry_env(**extra))
    assert "\n" not in str(err.value)


def test_run_batch_trains_variant_into_results(tmp_path):
    """The hidden entry through the CLI: variant 1 of a sweep, tiny synthetic data, a local
    folder as the results root, the run id from the Batch job id."""
    from cvtrain.data.cifar import write_synthetic_cifar100

    archive = write_synthetic_cifar100(tmp_path / "data", classes=5, train_per_class=8,
                                       test_per_class=2, fmt="binary", seed=1)
    spec_yaml = JOB_TEXT.replace("s3://example-bucket/datasets/cifar-100-binary.tar.gz",
                                 str(archive))
    results = tmp_path / "results"
    env = {batch.ENV_SPEC: batch.encode_spec(spec_yaml), batch.ENV_RESULTS: str(results),
           batch.ENV_RUNS: str(tmp_path / "scratch"), batch.ENV_JOB_ID: "feedbeef:1",
           batch.ENV_ARRAY_INDEX: "1", batch.ENV_ATTEMPT: "1",
           batch.ENV_SWEEP: json.dumps([["training.epochs=3"],
                                        ["training.epochs=1", "training.batch_size=8"]])}
    proc = run_cli("run-batch", env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "run id feedbeef-1" in proc.stdout
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
    rows, hints = batch.status_rows(jobs, now=now)
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
        boto3.client("logs", **kw).create_log_group(logGroupName=LOG_GROUP)
        outputs = {aws.OUT_BUCKET: BUCKET, aws.OUT_REPOSITORY: REPO_URI,
                   aws.OUT_SPOT_QUEUE: QUEUE, aws.OUT_ON_DEMAND_QUEUE: OFF_QUEUE,
                   aws.OUT_LOG_GROUP: LOG_GROUP}
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


def submit_args(job_path, *extra):
    return ("submit", job_path, "--backend", "aws-batch", "--queue", QUEUE,
            "--image", f"{REPO_URI}:{TAG}", "--results", f"s3://{BUCKET}/runs", *extra)


def test_submit_sweep_as_array_job_then_status(cloud, moto_url, write_job):
    job = write_job("tiny.yaml", JOB_TEXT)
    proc = run_cli(*submit_args(job, "--sweep", "training.optimizer.learning_rate=0.1,0.01",
                                "--gpus", "1", "--attempts", "4"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "ok  credentials: arn:aws:sts::" in out and "ok  results:" in out
    assert "registered job definition arn:aws:batch:" in out
    job_id = next(line.split(": ")[1].split()[0] for line in out.splitlines()
                  if line.startswith("submitted "))
    assert f"s3://{BUCKET}/runs/tiny/{job_id}-1/" in out
    assert "training.optimizer.learning_rate=0.01" in out

    b = batch_client(moto_url)
    parent = b.describe_jobs(jobs=[job_id])["jobs"][0]
    assert parent["arrayProperties"]["size"] == 2
    env = {e["name"]: e["value"] for e in parent["container"]["environment"]}
    assert json.loads(env[batch.ENV_SWEEP]) == [["training.optimizer.learning_rate=0.1"],
                                                ["training.optimizer.learning_rate=0.01"]]
    assert yaml.safe_load(base64.b64decode(env[batch.ENV_SPEC]))["name"] == "tiny"
    assert env[batch.ENV_RESULTS] == f"s3://{BUCKET}/runs"
    definition = b.describe_job_definitions(jobDefinitions=[parent["jobDefinition"]])[
        "jobDefinitions"][0]
    assert definition["retryStrategy"]["attempts"] == 4
    assert definition["containerProperties"]["command"] == batch.COMMAND

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


def test_submit_from_stack_outputs_and_dry_run(cloud, write_job):
    target = aws.resolve_target(queue=None, image=None, results=None, spot=True,
                                stack="cvtrain-test", version="0.1.0", env={})
    assert target == aws.Target(queue=QUEUE, image=f"{REPO_URI}:{TAG}",
                                results=f"s3://{BUCKET}/runs", log_group=LOG_GROUP)
    assert aws.resolve_target(queue=None, image=None, results=None, spot=False,
                              stack="cvtrain-test", version="0.1.0", env={}).queue == OFF_QUEUE
    with pytest.raises(CloudError, match="no such CloudFormation stack"):
        aws.resolve_target(queue=None, image=None, results=None, spot=True,
                           stack="nope", env={})
    with pytest.raises(UsageError, match="--queue, --image, --results: not given"):
        aws.resolve_target(queue=None, image=None, results=None, spot=True, stack=None, env={})

    job = write_job("tiny.yaml", JOB_TEXT)
    proc = run_cli("submit", job, "--stack", "cvtrain-test", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    props = plan["job_definition"]["containerProperties"]
    assert props["image"] == f"{REPO_URI}:0.1.0-gpu"
    assert props["logConfiguration"]["options"]["awslogs-group"] == LOG_GROUP
    assert plan["submit_job"]["jobQueue"] == QUEUE


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


def test_logs_and_cancel(cloud, moto_url):
    import boto3

    definition = batch.job_definition(options())
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


def test_array_parent_has_no_log(cloud):
    arn, _ = aws.ensure_job_definition(batch.job_definition(options()))
    made = aws.submit({"jobName": "cvtrain-arr", "jobQueue": QUEUE, "jobDefinition": arn,
                       "arrayProperties": {"size": 2}})
    with pytest.raises(UsageError, match=f"e.g. {made['jobId']}:0"):
        aws.stream_logs(made["jobId"], emit=print)


def test_cloud_commands_do_not_import_boto3_for_help():
    code = ("import sys\nfrom cvtrain.cli import app\n"
            "print([m for m in ('boto3', 'tensorflow') if m in sys.modules])")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr
