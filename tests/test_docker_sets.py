"""A set of jobs under ``--runner docker``: each job in its own container, in order, with
the set's lines and table, a failure reported while the rest go on, and complete runs
reused. The container hands its run's metrics back through ``$CVTRAIN_RESULT_FILE``.

Without an engine: the plan, the hand-back, and the set's flow with a stand-in ``docker``.
``@pytest.mark.docker``: the same with the default image (see tests/test_docker.py).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import JOBS, run_cli
from test_docker import IMAGE, engine, fake_docker, mounts_of, synth_data  # noqa: F401

from cvtrain import runs
from cvtrain.runners.docker import C_RESULT, C_RUNS, DockerRunner
from cvtrain.runners.result import RESULT_FILE_ENV, read_result, write_result
from cvtrain.runs import RunFolder, RunResult
from cvtrain.spec import load_spec


def test_plan_gives_the_container_a_folder_for_its_result(tmp_path):
    runner = DockerRunner(image="img", gpus="none", environ={"PATH": ""})
    plan = runner.plan(load_spec(JOBS / "cifar" / "basenet.yaml",
                                 ["data.path=s3://b/cifar-100-binary.tar.gz"]),
                       out=tmp_path / "o", result_dir=tmp_path / "r")
    assert mounts_of(plan.argv)[C_RESULT] == \
        f"type=bind,source={tmp_path / 'r'},target={C_RESULT}"
    assert f"{RESULT_FILE_ENV}={C_RESULT}/run.json" in plan.argv
    bare = runner.plan(load_spec(JOBS / "cifar" / "basenet.yaml",
                                 ["data.path=s3://b/cifar-100-binary.tar.gz"]))
    assert C_RESULT not in mounts_of(bare.argv)


def test_a_result_handed_back_names_the_host_run_folder(tmp_path):
    target = tmp_path / "run.json"
    inside = RunResult(RunFolder(C_RUNS, "basenet", "r1"),
                       {"run_id": "r1", "test_accuracy": 0.5})
    write_result(inside, environ={})
    assert not target.exists()  # nobody asked
    write_result(inside, environ={RESULT_FILE_ENV: str(target)})
    got = read_result(target, {C_RUNS: tmp_path / "out"})
    assert got.metrics == {"run_id": "r1", "test_accuracy": 0.5} and got.code == 0
    assert got.run.path == tmp_path / "out" / "basenet" / "r1"
    assert read_result(target, {}).run is None  # scratch in the container
    assert read_result(tmp_path / "missing.json", {}, 2) == RunResult(None, None, 2)
    target.write_text("{not json")
    assert read_result(target, {}).metrics is None


# a stand-in engine: each container prints a line; zz_broken fails with exit 2, the others
# leave a result where $CVTRAIN_RESULT_FILE's mount says
ENGINE = r"""
case "$1" in
version) echo 28.0.0 ;;
image) [ "$5" = cvtrain:cpu ] || { echo "Error: No such image: $5" >&2; exit 1; }
       echo sha256:0123 ;;
run) prev=""; for a in "$@"; do
       case "$prev" in
       --label) name="${a#io.cvtrain.job=}" ;;
       --mount) case "$a" in *target=/result) src="${a#type=bind,source=}"
                                               src="${src%,target=/result}" ;; esac ;;
       esac; prev="$a"; done
     echo "$name" >> "${0%/*}/started"
     echo "training $name in the container"
     [ "$name" = zz_broken ] && { echo "cvtrain: error: training.devices: 4" >&2; exit 2; }
     printf '{"run_id": "r-%s", "test_accuracy": 0.25, "run_folder": "/runs/%s/r-%s"}' \
       "$name" "$name" "$name" > "$src/run.json" ;;
esac
"""


def _set_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "set"
    folder.mkdir(parents=True)
    shutil.copy(JOBS / "cifar" / "basenet.yaml", folder / "basenet.yaml")
    (folder / "zz_broken.yaml").write_text(  # fails in its container: no 4 devices there
        "extends: basenet.yaml\ntraining:\n  devices: 4\n")
    return folder


@pytest.mark.slow
def test_a_set_with_a_stand_in_engine(tmp_path):
    bin_ = fake_docker(tmp_path / "bin", ENGINE)
    archive = tmp_path / "cifar-100-binary.tar.gz"
    archive.write_bytes(b"mounted only")
    env = {"PATH": f"{bin_}:/usr/bin:/bin", "CVTRAIN_CACHE": str(tmp_path / "cache")}
    done = run_cli("run", _set_folder(tmp_path), "normalize", "--runner", "docker",
                   "--image", "cvtrain:cpu", "--gpus", "none", "--set", f"data.path={archive}",
                   "--out", tmp_path / "runs", env=env)
    assert done.returncode == 2, done.stderr
    assert (bin_ / "started").read_text().split() == ["basenet", "zz_broken", "normalize"]
    text = " ".join(done.stdout.split())
    assert "== [1/3] basenet" in text and "== [3/3] normalize" in text
    assert "== zz_broken: failed (exit 2)" in text and "== normalize: done" in text
    assert "r-basenet" in text and "r-normalize" in text and "0.2500" in text  # the table
    assert "1 of 3 jobs failed" in done.stderr and "Traceback" not in done.stderr
    # no image: one line before any job starts
    none = run_cli("run", _set_folder(tmp_path / "again"), "--runner", "docker", "--image",
                   "cvtrain:nope", "--gpus", "none", "--set", f"data.path={archive}",
                   "--out", tmp_path / "runs", env=env)
    assert none.returncode == 2 and "== [1/" not in none.stdout
    assert none.stderr.count("cvtrain: error: --image cvtrain:nope: no such image") == 1


@pytest.mark.docker
def test_a_set_in_containers(engine, tmp_path, synth_data):  # noqa: F811
    """Two CIFAR jobs and a broken one, each in a container: the broken one is reported and
    the others go on; the two again reuse their complete runs."""
    out, cache = tmp_path / "runs", tmp_path / "cache"
    args = ["--runner", "docker", "--image", engine, "--gpus", "none", "--set",
            "training.epochs=1", "--set", "data.num_classes=5", "--set",
            f"data.path={synth_data}", "--seed", "0", "--out", out]
    first = run_cli("run", _set_folder(tmp_path), "normalize", *args,
                    env={"CVTRAIN_CACHE": str(cache)}, timeout=600)
    assert first.returncode == 2, first.stdout + first.stderr
    text = " ".join(first.stdout.split())
    assert text.index("== [1/3] basenet") < text.index("== [2/3] zz_broken") \
        < text.index("== [3/3] normalize")
    assert "== zz_broken: failed (exit 2)" in text and "== normalize: done" in text
    assert "1 of 3 jobs failed" in first.stderr
    ids = {}
    for job in ("basenet", "normalize"):
        (run_dir,) = (out / job).iterdir()
        assert runs.verify(run_dir) == []
        assert run_dir.stat().st_uid == os.getuid()
        ids[job] = run_dir.name
        assert run_dir.name in text  # the container's run id, in the host's table
        metrics = json.loads((run_dir / runs.METRICS).read_text())
        assert f"{metrics['test_accuracy']:.4f}" in text
    assert not (out / "zz_broken").exists()

    # the same jobs again (the jobs folder's basenet is the copy's twin): both reused
    again = run_cli("run", "basenet", "normalize", *args, env={"CVTRAIN_CACHE": str(cache)},
                    timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    text = " ".join(again.stdout.split())
    assert text.count("reused: ") == 2, text
    for job, run_id in ids.items():
        assert [p.name for p in (out / job).iterdir()] == [run_id]  # nothing trained anew
        assert f"== {job}: done" in text and run_id in text


@pytest.mark.slow
def test_sigterm_ends_a_set_after_the_container_it_reached(tmp_path):
    """``docker stop`` of the host process during a set: the container stops (75, as
    cvtrain in there would) and no later job starts."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import ROOT

    bin_ = fake_docker(tmp_path / "bin", ENGINE.replace(
        '     echo "training $name in the container"\n',
        '     trap \'echo "stopped by SIGTERM (in the container)" >&2; exit 75\' TERM\n'
        '     touch "${0%/*}/running"; while true; do sleep 0.1; done\n'))
    archive = tmp_path / "cifar-100-binary.tar.gz"
    archive.write_bytes(b"mounted only")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cvtrain", "run", str(_set_folder(tmp_path)), "--runner",
         "docker", "--image", "cvtrain:cpu", "--gpus", "none", "--set",
         f"data.path={archive}", "--out", str(tmp_path / "runs")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PATH": f"{bin_}:/usr/bin:/bin",
             "CVTRAIN_CACHE": str(tmp_path / "cache")})
    deadline = time.monotonic() + 60
    while not (bin_ / "running").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (bin_ / "running").exists(), proc.communicate(timeout=10)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert (bin_ / "started").read_text().split() == ["basenet"]  # zz_broken never started
    assert "== basenet: stopped (exit 75)" in " ".join(out.split())
    assert "stopped by SIGTERM: 1 job of the set not started" in err
    assert "Traceback" not in err
