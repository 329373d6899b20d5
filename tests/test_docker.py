"""The docker backend.

Unit tests (default suite, no engine): the ``docker run`` argv builder, the plan made from a
spec, and the one-line errors, with a fake ``docker`` command where an engine would answer.

``@pytest.mark.docker`` tests need a Docker engine and the default image (``make image``,
tag in $CVTRAIN_TEST_IMAGE, default cvtrain:latest); they skip when either is missing and
``make test-docker`` / .ci/run runs them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from conftest import JOBS, PATH_KEYS, ROOT, job_using, run_cli
from s3_server import s3, s3_server  # noqa: F401  (fixtures)

from cvtrain import runs
from cvtrain.errors import DataError, UsageError
from cvtrain.runners import RUNNERS, LocalRunner, Runner, get_runner
from cvtrain.runners.docker import (
    C_CACHE,
    C_JOB,
    C_RUNS,
    DockerError,
    DockerRunner,
    Mount,
    build_run_argv,
    gpu_args,
)
from cvtrain.spec import load_spec, local_paths, with_values

BASENET = JOBS / "cifar" / "basenet.yaml"
IMAGE = os.environ.get("CVTRAIN_TEST_IMAGE", "cvtrain:latest")
SECRET = "wJalrXUtnFEMI-not-a-real-secret"


def mounts_of(argv: list[str]) -> dict[str, str]:
    """target -> the whole --mount value."""
    found = {}
    for i, arg in enumerate(argv):
        if arg == "--mount":
            fields = dict(f.split("=", 1) if "=" in f else (f, "") for f in
                          argv[i + 1].replace('"', "").split(","))
            found[fields["target"]] = argv[i + 1]
    return found


def env_of(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "-e"]


# ---------------------------------------------------------------------------- argv builder


def test_argv_builder_orders_flags_image_then_cvtrain_args(tmp_path):
    argv = build_run_argv(
        image="cvtrain:cpu", args=["run", C_JOB, "--out", C_RUNS],
        mounts=[Mount(tmp_path / "spec.yaml", C_JOB, readonly=True),
                Mount(tmp_path / "runs", C_RUNS)],
        pass_env=["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"],
        set_env={"CVTRAIN_CACHE": C_CACHE}, user="1000:1000", gpus="none", network="host",
        name="cvtrain-basenet-abc123")
    assert argv[:3] == ["docker", "run", "--rm"]
    assert argv[argv.index("--user") + 1] == "1000:1000"
    assert argv[argv.index("--network") + 1] == "host"
    assert argv[argv.index("--name") + 1] == "cvtrain-basenet-abc123"
    assert "--gpus" not in argv
    i = argv.index("cvtrain:cpu")
    assert argv[i + 1:] == ["run", C_JOB, "--out", C_RUNS]
    assert all(not a.startswith("-") or a == "--out" for a in argv[i + 1:])
    m = mounts_of(argv)
    assert m[C_JOB] == f"type=bind,source={tmp_path / 'spec.yaml'},target={C_JOB},readonly"
    assert m[C_RUNS] == f"type=bind,source={tmp_path / 'runs'},target={C_RUNS}"
    # names only: docker copies the values from its own environment
    assert env_of(argv) == [f"CVTRAIN_CACHE={C_CACHE}", "AWS_ACCESS_KEY_ID",
                            "AWS_SECRET_ACCESS_KEY"]


@pytest.mark.parametrize("gpus, expected", [
    ("all", ["--gpus", "all"]),
    ("ALL", ["--gpus", "all"]),
    ("none", []),
    (None, []),
    ("1", ["--gpus", '"device=0"']),
    ("2", ["--gpus", '"device=0,1"']),
    ("4", ["--gpus", '"device=0,1,2,3"']),
    ("0,2", ["--gpus", '"device=0,2"']),
    ("device=1", ["--gpus", '"device=1"']),
])
def test_gpu_flags(gpus, expected):
    assert gpu_args(gpus) == expected
    argv = build_run_argv(image="img", args=["run", "x"], gpus=gpus)
    if expected:
        assert argv[argv.index("--gpus"):argv.index("--gpus") + 2] == expected
        assert argv.index("--gpus") < argv.index("img")
    else:
        assert "--gpus" not in argv


@pytest.mark.parametrize("gpus", ["0", "-1", "two", "0;rm -rf /", "device=a,b"])
def test_bad_gpu_values_are_refused(gpus):
    with pytest.raises(UsageError, match="--gpus"):
        gpu_args(gpus)


def test_mount_values_with_commas_are_quoted_for_docker_csv(tmp_path):
    odd = tmp_path / "a,b"
    arg = Mount(odd, "/data/0/a,b", readonly=True).arg()
    assert arg == f'type=bind,"source={odd}","target=/data/0/a,b",readonly'


def test_network_is_configurable_and_host_by_default():
    assert "--network" in build_run_argv(image="i", args=[])
    argv = build_run_argv(image="i", args=[], network="none")
    assert argv[argv.index("--network") + 1] == "none"


# ---------------------------------------------------------------------------- the plan


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "data" / "cifar-100-binary.tar.gz"
    path.parent.mkdir()
    path.write_bytes(b"not really an archive; the plan only mounts it")
    return path


def plan_for(tmp_path, environ=None, overrides=(), **kwargs):
    spec = load_spec(BASENET, list(overrides))
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path / "home"),
           "CVTRAIN_CACHE": str(tmp_path / "cache"), **(environ or {})}
    runner = DockerRunner(image="cvtrain:cpu", gpus=kwargs.pop("gpus", None), environ=env)
    return runner.plan(spec, spec_file=tmp_path / "spec.yaml", **kwargs)


def test_plan_mounts_spec_out_cache_and_data_and_rewrites_data_path(tmp_path, archive):
    plan = plan_for(tmp_path, overrides=[f"data.path={archive}", "training.epochs=1"],
                    out=tmp_path / "runs", run_id="r1")
    argv = plan.argv
    m = mounts_of(argv)
    assert m[C_JOB].endswith(f"target={C_JOB},readonly")
    assert f"source={tmp_path / 'runs'}" in m[C_RUNS] and "readonly" not in m[C_RUNS]
    assert f"source={tmp_path / 'cache'}" in m[C_CACHE]
    data_target = "/data/0/cifar-100-binary.tar.gz"
    assert m[data_target] == f"type=bind,source={archive},target={data_target},readonly"
    doc = yaml.safe_load(plan.spec_text)
    assert doc["data"]["path"] == data_target
    assert doc["name"] == "basenet" and doc["training"]["epochs"] == 1
    assert "extends" not in doc
    assert f"CVTRAIN_CACHE={C_CACHE}" in env_of(argv)
    assert argv[argv.index("--user") + 1] == f"{os.getuid()}:{os.getgid()}"
    assert argv[argv.index("--network") + 1] == "host"
    assert argv[argv.index("--gpus") + 1] == "all"  # the GPU image's default
    assert argv[argv.index("cvtrain:cpu") + 1:] == ["run", C_JOB, "--out", C_RUNS,
                                                    "--run-id", "r1"]
    assert set(plan.create) == {tmp_path / "runs", tmp_path / "cache"}
    assert plan.shown == {C_RUNS: tmp_path / "runs"}


def test_plan_resolves_extends_on_the_host(tmp_path, write_job, archive):
    parent = write_job("jobs/parent.yaml", textwrap.dedent(f"""\
        data: {{dataset: cifar100, path: {archive}, num_classes: 5}}
        model: {{name: basenet}}
        training: {{epochs: 3}}
    """))
    child = write_job("jobs/child.yaml", "extends: parent.yaml\ntraining: {epochs: 1}\n")
    runner = DockerRunner(image="img", gpus="none", environ={"PATH": ""})
    plan = runner.plan(str(child), spec_file=tmp_path / "s.yaml", out=tmp_path / "o")
    doc = yaml.safe_load(plan.spec_text)
    assert parent.exists() and doc["name"] == "child"
    assert doc["data"]["num_classes"] == 5 and doc["training"]["epochs"] == 1
    assert doc["data"]["path"].startswith("/data/0/")


def test_plan_passes_aws_settings_by_name_never_by_value(tmp_path):
    environ = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET,
               "AWS_SESSION_TOKEN": SECRET + "-token", "AWS_REGION": "eu-west-1",
               "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "UNRELATED_SECRET": SECRET}
    plan = plan_for(tmp_path, environ=environ, results="s3://bucket/prefix",
                    endpoint_url="http://127.0.0.1:9000")
    argv = plan.argv
    joined = "\0".join(argv)
    assert SECRET not in joined and "AKIAEXAMPLE" not in joined
    env = env_of(argv)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_REGION", "AWS_ENDPOINT_URL"):
        assert name in env
    assert "UNRELATED_SECRET" not in joined
    assert "AWS_PROFILE" not in env and "AWS_DEFAULT_REGION" not in env  # only those set
    # results to a bucket: no host runs folder; the run folder is scratch in the container
    assert C_RUNS not in mounts_of(argv)
    tail = argv[argv.index("cvtrain:cpu") + 1:]
    assert tail == ["run", C_JOB, "--out", "/tmp/runs", "--results", "s3://bucket/prefix",
                    "--endpoint-url", "http://127.0.0.1:9000"]


def test_plan_mounts_aws_config_read_only_when_a_profile_is_used(tmp_path):
    aws = tmp_path / "home" / ".aws"
    aws.mkdir(parents=True)
    (aws / "config").write_text("[profile ci]\nregion = eu-west-1\n")
    (aws / "credentials").write_text(f"[ci]\naws_secret_access_key = {SECRET}\n")
    (aws / "sso" / "cache").mkdir(parents=True)  # SSO tokens: read from ~/.aws/sso/cache
    (aws / "sso" / "cache" / "token.json").write_text("{}")
    plan = plan_for(tmp_path, environ={"AWS_PROFILE": "ci"})
    m = mounts_of(plan.argv)
    # the whole ~/.aws as the container's ~/.aws (HOME=/tmp there), read-only
    assert m["/tmp/.aws"] == f"type=bind,source={aws},target=/tmp/.aws,readonly"
    env = env_of(plan.argv)
    assert "AWS_PROFILE" in env and "HOME=/tmp" in env
    assert "AWS_CONFIG_FILE=/tmp/.aws/config" in env
    assert "AWS_SHARED_CREDENTIALS_FILE=/tmp/.aws/credentials" in env
    assert SECRET not in "\0".join(plan.argv)
    # a config file kept elsewhere is mounted on its own
    other = tmp_path / "elsewhere.ini"
    other.write_text("[profile ci]\n")
    plan = plan_for(tmp_path, environ={"AWS_PROFILE": "ci", "AWS_CONFIG_FILE": str(other)})
    assert mounts_of(plan.argv)["/aws/config"].endswith(",readonly")
    assert "AWS_CONFIG_FILE=/aws/config" in env_of(plan.argv)
    # without a profile nothing of ~/.aws is mounted
    assert not any("aws" in t for t in mounts_of(plan_for(tmp_path).argv))


def test_plan_mounts_a_local_results_root(tmp_path):
    plan = plan_for(tmp_path, results=str(tmp_path / "results"))
    m = mounts_of(plan.argv)
    assert f"source={tmp_path / 'results'}" in m["/results"]
    tail = plan.argv[plan.argv.index("cvtrain:cpu") + 1:]
    assert tail[-2:] == ["--results", "/results"]


def test_plan_refuses_a_missing_local_data_path(tmp_path):
    with pytest.raises(DataError, match="data.path: .*no such file or folder"):
        plan_for(tmp_path, overrides=[f"data.path={tmp_path / 'nope.tar.gz'}"])




@pytest.mark.parametrize("key, section, name", PATH_KEYS,
                         ids=[f"{key}-{name}" for key, _, name in PATH_KEYS])
def test_plan_mounts_every_local_path_the_registries_declare(tmp_path, key, section, name):
    """Whatever dataset or model declares a path field, a local file there is mounted
    read-only and the container's spec points at it; a missing one is one line naming
    the key."""
    spec = job_using(section, name)
    spec = with_values(spec, {p.key: "s3://b/elsewhere" for p in local_paths(spec)})
    local = tmp_path / "mine" / "file.weights.h5"
    local.parent.mkdir()
    local.write_bytes(b"x")
    runner = DockerRunner(image="img", gpus="none", environ={"PATH": ""})
    plan = runner.plan(with_values(spec, {key: str(local)}), spec_file=tmp_path / "s.yaml",
                       out=tmp_path / "o")
    target = "/data/0/file.weights.h5"
    assert mounts_of(plan.argv)[target] == f"type=bind,source={local},target={target},readonly"
    doc = yaml.safe_load(plan.spec_text)
    section_name, field_name = key.split(".")
    assert doc[section_name][field_name] == target
    assert type(spec).model_validate(doc).name == spec.name  # a resolved spec, valid as one
    with pytest.raises(DataError) as err:
        runner.plan(with_values(spec, {key: str(tmp_path / "nope")}))
    assert str(err.value) == f"{key}: {tmp_path / 'nope'}: no such file or folder"


def test_plan_keeps_uri_data_paths(tmp_path):
    plan = plan_for(tmp_path, overrides=["data.path=s3://bucket/cifar-100-binary.tar.gz"])
    assert yaml.safe_load(plan.spec_text)["data"]["path"] == \
        "s3://bucket/cifar-100-binary.tar.gz"
    assert not any(t.startswith("/data") for t in mounts_of(plan.argv))


@pytest.mark.parametrize("name", RUNNERS)
def test_every_runner_name_has_a_runner(name):
    runner = get_runner(name)
    assert isinstance(runner, Runner) and runner.name == name


def test_runners():
    assert isinstance(get_runner("local"), LocalRunner)
    docker = get_runner("docker", image="x:y", gpus="none", network="none")
    assert isinstance(docker, DockerRunner) and docker.image == "x:y"
    with pytest.raises(UsageError):
        get_runner("kubernetes")


# ---------------------------------------------------------------------------- one-line errors


def fake_docker(folder: Path, script: str) -> Path:
    """A ``docker`` command that answers like an engine would, for the error paths."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "docker"
    path.write_text("#!/bin/sh\n" + textwrap.dedent(script))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


def docker_cli(tmp_path, *args, path: str, env=None):
    data = tmp_path / "d"
    if not data.exists():
        run_cli("data", "synth", "cifar100", data, "--classes", "3", "--train-per-class", "2",
                "--test-per-class", "1")
    return run_cli("run", "basenet", "--runner", "docker", "--image", "cvtrain:cpu",
                   "--set", f"data.path={data / 'cifar-100-binary.tar.gz'}",
                   "--out", tmp_path / "runs", *args,
                   env={"PATH": path, "CVTRAIN_CACHE": str(tmp_path / "cache"), **(env or {})})


def one_error_line(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("cvtrain: error")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.slow
def test_no_docker_command_is_one_line(tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = docker_cli(tmp_path, "--gpus", "none", path=str(empty))
    assert result.returncode == DockerError.exit_code == 1
    assert one_error_line(result).startswith(
        "cvtrain: error: docker: command not found; install Docker")


@pytest.mark.slow
def test_unreachable_daemon_is_one_line(tmp_path):
    bin_ = fake_docker(tmp_path / "bin", """\
        echo "Client: Docker Engine" ; echo "Cannot connect to the Docker daemon at \
unix:///nowhere.sock. Is the docker daemon running?" >&2; exit 1
    """)
    result = docker_cli(tmp_path, "--gpus", "none", path=str(bin_),
                        env={"DOCKER_HOST": "unix:///nowhere.sock"})
    assert result.returncode == 1
    line = one_error_line(result)
    assert line.startswith("cvtrain: error: docker: cannot reach the Docker daemon at "
                           "unix:///nowhere.sock (Cannot connect")
    assert "set DOCKER_HOST" in line


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker command")
def test_unreachable_daemon_with_the_real_docker_command(tmp_path):
    dead = tmp_path / "dead.sock"
    result = docker_cli(tmp_path, "--gpus", "none", path=os.environ["PATH"],
                        env={"DOCKER_HOST": f"unix://{dead}"})
    assert result.returncode == 1
    assert one_error_line(result).startswith(
        f"cvtrain: error: docker: cannot reach the Docker daemon at unix://{dead}")


ENGINE = """\
    case "$1" in
    version) echo 28.0.0 ;;
    image) [ "$5" = cvtrain:cpu ] || { echo "Error: No such image: $5" >&2; exit 1; }
           echo sha256:0123 ;;
    run) printf "%s\\n" "$@" > "${0%/*}/argv"; {run}
    esac
"""


@pytest.mark.slow
def test_missing_image_is_one_line(tmp_path):
    bin_ = fake_docker(tmp_path / "bin", ENGINE.replace("{run}", "exit 0 ;;"))
    result = docker_cli(tmp_path, "--image", "cvtrain:nope", "--gpus", "none", path=str(bin_))
    assert result.returncode == 2
    assert one_error_line(result) == (
        "cvtrain: error: --image cvtrain:nope: no such image on this Docker engine; build it "
        "(make image: it runs on GPUs and CPUs) or pull it "
        "(docker pull cvtrain:nope)")


@pytest.mark.slow
def test_missing_gpu_runtime_is_one_line(tmp_path):
    bin_ = fake_docker(tmp_path / "bin", ENGINE.replace("{run}", """\
        echo 'docker: Error response from daemon: could not select device driver "" with \
capabilities: [[gpu]].' >&2; exit 125 ;;"""))
    result = docker_cli(tmp_path, path=str(bin_))  # --gpus all by default
    assert result.returncode == 2
    assert one_error_line(result).startswith(
        "cvtrain: error: --gpus all: this Docker engine has no GPU runtime; install")


@pytest.mark.slow
def test_container_output_and_exit_code_come_through(tmp_path):
    bin_ = fake_docker(tmp_path / "bin", ENGINE.replace("{run}", """\
        echo "epoch 1/1 from the container"; echo "cvtrain: error: data is corrupt" >&2
        exit 3 ;;"""))
    result = docker_cli(tmp_path, "--gpus", "2", "--network", "none", "--run-id", "r7",
                        path=str(bin_), env={"AWS_SECRET_ACCESS_KEY": SECRET})
    assert result.returncode == 3, result.stderr
    assert "epoch 1/1 from the container" in result.stdout
    assert "cvtrain: error: data is corrupt" in result.stderr
    argv = (bin_ / "argv").read_text().splitlines()
    assert argv[argv.index("--gpus") + 1] == '"device=0,1"'
    assert argv[argv.index("--network") + 1] == "none"
    assert "AWS_SECRET_ACCESS_KEY" in argv and SECRET not in "\n".join(argv)
    assert argv[-2:] == ["--run-id", "r7"]
    assert (tmp_path / "runs").is_dir() and (tmp_path / "cache").is_dir()  # made by us


def test_docker_options_need_the_docker_backend():
    result = run_cli("run", "basenet", "--image", "x", "--gpus", "all")
    assert result.returncode == 2
    assert one_error_line(result) == \
        "cvtrain: error: --image, --gpus: only with --runner docker"


# ---------------------------------------------------------------------------- with an engine


def _engine_and_image() -> str | None:
    if shutil.which("docker") is None:
        return "no docker command"
    try:
        ok = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True,
                            timeout=30)
    except subprocess.TimeoutExpired:
        return "docker engine does not answer"
    if ok.returncode != 0:
        return f"no Docker engine, or no image {IMAGE} (make image)"
    return None


@pytest.fixture(scope="module")
def engine():
    why = _engine_and_image()
    if why:
        if os.environ.get("CVTRAIN_REQUIRE_DOCKER"):  # CI: a missing engine is a failure
            pytest.fail(f"CVTRAIN_REQUIRE_DOCKER is set but {why}")
        pytest.skip(why)
    return IMAGE


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth")
    result = run_cli("data", "synth", "cifar100", folder, "--classes", "5",
                     "--train-per-class", "40", "--test-per-class", "10")
    assert result.returncode == 0, result.stderr
    return folder / "cifar-100-binary.tar.gz"


def docker(*args, timeout=120):
    return subprocess.run(["docker", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.docker
def test_image_answers_version_and_lists_its_jobs(engine, tmp_path, write_job):
    from cvtrain import __version__

    version = docker("run", "--rm", "--network", "none", engine, "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"cvtrain {__version__}"
    jobs = docker("run", "--rm", "--network", "none", engine, "jobs", "list")
    assert jobs.returncode == 0, jobs.stderr
    assert "/opt/cvtrain/jobs" in jobs.stdout and "basenet" in jobs.stdout
    # a job file from the host, mounted instead of the image's
    job = write_job("mine.yaml", "extends: /opt/cvtrain/jobs/cifar/basenet.yaml\n"
                                 "training: {epochs: 7}\n")
    shown = docker("run", "--rm", "--network", "none", "--mount",
                   f"type=bind,source={job},target=/host/mine.yaml,readonly",
                   engine, "jobs", "show", "/host/mine.yaml")
    assert shown.returncode == 0, shown.stderr
    doc = yaml.safe_load(shown.stdout)
    assert doc["name"] == "mine" and doc["training"]["epochs"] == 7
    labels = json.loads(docker("image", "inspect", "--format",
                               "{{json .Config.Labels}}", engine).stdout)
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.revision"]
    user = docker("image", "inspect", "--format", "{{.Config.User}}", engine).stdout.strip()
    assert user and not user.startswith(("0", "root"))


@pytest.mark.docker
def test_run_in_a_container_leaves_a_complete_run_folder(engine, tmp_path, synth_data):
    out = tmp_path / "runs"
    cache = tmp_path / "cache"
    result = run_cli("run", "basenet", "--runner", "docker", "--image", engine,
                     "--gpus", "none", "--set", "training.epochs=1",
                     "--set", "data.num_classes=5", "--set", f"data.path={synth_data}",
                     "--seed", "0", "--out", out, "--run-id", "ci-docker",
                     env={"CVTRAIN_CACHE": str(cache)}, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "epoch 1/1" in result.stdout  # streamed from the container
    assert f"cvtrain: docker: {engine}, gpus none, network host; /runs is {out}" \
        in result.stderr
    run = out / "basenet" / "ci-docker"
    assert runs.verify(run) == []
    for name in (runs.SPEC, runs.METRICS, runs.HISTORY, runs.CURVES, runs.MODEL, runs.LOG):
        assert (run / name).is_file()
        assert (run / name).stat().st_uid == os.getuid()  # the host user's, not root's
    metrics = json.loads((run / runs.METRICS).read_text())
    assert metrics["epochs_run"] == 1 and metrics["seed"] == 0
    assert metrics["dataset"]["source"] == "/data/0/cifar-100-binary.tar.gz"
    revision = json.loads(docker("image", "inspect", "--format", "{{json .Config.Labels}}",
                                 engine).stdout)["org.opencontainers.image.revision"]
    assert metrics["git_revision"] == revision
    assert yaml.safe_load((run / runs.SPEC).read_text())["data"]["path"] == \
        "/data/0/cifar-100-binary.tar.gz"
    # the same id with another spec: the container refuses, and its exit code comes back
    again = run_cli("run", "basenet", "--runner", "docker", "--image", engine, "--gpus",
                    "none", "--set", f"data.path={synth_data}", "--out", out, "--run-id",
                    "ci-docker", env={"CVTRAIN_CACHE": str(cache)})
    assert again.returncode == 2
    assert "this run id holds a complete run of a different spec" in again.stderr


@pytest.mark.docker
def test_run_in_a_container_to_a_bucket(engine, request, tmp_path, synth_data):
    """The run goes to S3 (the test server on 127.0.0.1, reached over --network host) with
    the credentials passed by name; the complete run is in the bucket and in results ls."""
    if "--results" not in run_cli("run", "--help").stdout:
        pytest.skip("cvtrain run has no --results option yet")
    bucket = request.getfixturevalue("s3")  # after the skip: the server starts only if needed
    root = bucket.uri("runs")
    result = run_cli("run", "basenet", "--runner", "docker", "--image", engine,
                     "--gpus", "none", "--set", "training.epochs=1",
                     "--set", "data.num_classes=5", "--set", f"data.path={synth_data}",
                     "--seed", "0", "--run-id", "ci-s3", "--results", root,
                     env={"CVTRAIN_CACHE": str(tmp_path / "cache"), "CVTRAIN_DEBUG": "1"},
                     timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    argv_line = next(ln for ln in result.stderr.splitlines()
                     if ln.startswith("cvtrain: docker run "))  # printed with CVTRAIN_DEBUG
    assert " -e AWS_SECRET_ACCESS_KEY " in argv_line and " -e AWS_ACCESS_KEY_ID " in argv_line
    assert "AWS_SECRET_ACCESS_KEY=" not in argv_line and "AWS_ACCESS_KEY_ID=" not in argv_line
    prefix = "runs/basenet/ci-s3/"
    listed = bucket.client.list_objects_v2(Bucket=bucket.bucket, Prefix=prefix).get("Contents", [])
    keys = {obj["Key"].removeprefix(prefix) for obj in listed}
    assert runs.MANIFEST in keys
    manifest = json.loads(bucket.client.get_object(
        Bucket=bucket.bucket, Key=prefix + runs.MANIFEST)["Body"].read())
    assert {f["path"] for f in manifest["files"]} <= keys
    assert {runs.METRICS, runs.MODEL, runs.SPEC} <= keys
    if "results" in run_cli("--help").stdout:
        ls = run_cli("results", "ls", root)
        assert ls.returncode == 0, ls.stderr
        assert "ci-s3" in ls.stdout


@pytest.mark.docker
def test_container_errors_and_exit_codes_come_back(engine, tmp_path):
    empty = tmp_path / "no-data-here"
    empty.mkdir()
    result = run_cli("run", "basenet", "--runner", "docker", "--image", engine, "--gpus",
                     "none", "--set", f"data.path={empty}", "--out", tmp_path / "runs",
                     env={"CVTRAIN_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 3, result.stderr  # DataError inside the container
    assert "cvtrain: error: " in result.stderr


@pytest.mark.docker
def test_missing_image_with_a_real_engine(engine, tmp_path, synth_data):
    result = run_cli("run", "basenet", "--runner", "docker", "--image",
                     "cvtrain-no-such-image:0", "--gpus", "none",
                     "--set", f"data.path={synth_data}", "--out", tmp_path)
    assert result.returncode == 2
    assert one_error_line(result).startswith(
        "cvtrain: error: --image cvtrain-no-such-image:0: no such image on this Docker engine")


@pytest.mark.docker
@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has GPUs")
def test_no_gpu_runtime_with_a_real_engine(engine, tmp_path, synth_data):
    result = run_cli("run", "basenet", "--runner", "docker", "--image", engine,
                     "--gpus", "all", "--set", f"data.path={synth_data}", "--out", tmp_path,
                     env={"CVTRAIN_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 2, result.stderr
    assert one_error_line(result).startswith(
        "cvtrain: error: --gpus all: this Docker engine has no GPU runtime")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


def test_sigterm_goes_on_to_the_container_and_its_exit_code_comes_back(tmp_path):
    """``docker stop`` of the host process: docker (here a stand-in that behaves like
    cvtrain in a container) gets the signal, stops, and its 75 is the host's exit code."""
    bin_ = fake_docker(tmp_path / "bin", ENGINE.replace("{run}", """\
        trap 'echo "cvtrain: stopped by SIGTERM (in the container)" >&2; exit 75' TERM
        touch "${0%/*}/started"; while true; do sleep 0.1; done ;;"""))
    data = tmp_path / "d"
    run_cli("data", "synth", "cifar100", data, "--classes", "3", "--train-per-class", "2",
            "--test-per-class", "1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cvtrain", "run", "basenet", "--runner", "docker", "--image",
         "cvtrain:cpu", "--gpus", "none", "--set",
         f"data.path={data / 'cifar-100-binary.tar.gz'}", "--out", str(tmp_path / "runs")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PATH": f"{bin_}:/usr/bin:/bin",  # the stand-in docker first
             "CVTRAIN_CACHE": str(tmp_path / "cache")})
    deadline = time.monotonic() + 60
    while not (bin_ / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (bin_ / "started").exists(), proc.communicate(timeout=10)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert "stopped by SIGTERM (in the container)" in err and "Traceback" not in err
