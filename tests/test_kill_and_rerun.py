"""A run killed or stopped at any moment, the finish included, ends complete on rerun:
the local run folder and its copy in the results, metrics equal to an uninterrupted run.

Kill points are chosen exactly (``kill_at.py`` signals the process right after a given
function returns), SIGTERM also from the first second of the process."""

# ruff: noqa: F811 - pytest fixtures imported from s3_server are used as arguments
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, kill_at, run_cli
from s3_server import s3, s3_server  # noqa: F401 - fixtures

from cvtrain import runs
from cvtrain.data.cifar import write_synthetic_cifar100
from cvtrain.training import checkpoint

pytestmark = pytest.mark.slow  # every test here trains a model
EPOCHS = 2


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_synthetic_cifar100(tmp_path_factory.mktemp("stops-data"), classes=4,
                                    train_per_class=120, test_per_class=10, seed=5)


def job_args(archive, out, run_id, *extra):
    return ["run", "augment", "--set", f"data.path={archive}", "--set", "data.num_classes=4",
            "--set", f"training.epochs={EPOCHS}", "--seed", "7", "--out", str(out),
            "--run-id", run_id, *extra]


def outcome(run_path):
    m = json.loads((run_path / runs.METRICS).read_text())
    rows = runs.parse_history((run_path / runs.HISTORY).read_text())
    return ({k: m[k] for k in ("test_accuracy", "test_loss", "epochs_run", "best_epoch")},
            [(r["epoch"], r["loss"], r["accuracy"], r["val_loss"]) for r in rows])


@pytest.fixture(scope="module")
def uninterrupted(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    done = run_cli(*job_args(archive, out, "full"))
    assert done.returncode == 0, done.stderr[-3000:]
    return outcome(out / "augment" / "full")


def bucket_files(s3, prefix):
    listing = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix)
    return {o["Key"][len(prefix):]: o for o in listing.get("Contents", [])}


def assert_complete_everywhere(s3, run_path, prefix, uninterrupted):
    """Complete here and in the bucket (same bytes), no checkpoint left anywhere, and the
    same result as the uninterrupted run."""
    assert runs.verify(run_path) == []
    assert not any((run_path / name).exists()
                   for name in (runs.CHECKPOINT, *runs.CHECKPOINT_TRANSIENT))
    remote = bucket_files(s3, prefix)
    manifest = json.loads((run_path / runs.MANIFEST).read_text())
    assert set(remote) == {f["path"] for f in manifest["files"]} | {runs.MANIFEST}
    body = s3.client.get_object(Bucket=s3.bucket, Key=prefix + runs.MANIFEST)["Body"].read()
    assert body == (run_path / runs.MANIFEST).read_bytes()
    assert outcome(run_path) == uninterrupted


# (where, signal, what the interrupted attempt must say on stderr)
POINTS = [
    # the local manifest just written, nothing of the finish uploaded yet
    ("cvtrain.runs:RunFolder.finalize", "SIGKILL", None),
    ("cvtrain.runs:RunFolder.finalize", "SIGTERM", "its copy in s3://"),
    # every file uploaded but the manifest
    ("cvtrain.storage.runs:RunUploader._delete@1", "SIGKILL", None),
    # the bucket complete, the checkpoints not yet deleted
    ("cvtrain.storage.runs:RunUploader.finish", "SIGKILL", None),
    # training over (the last checkpoint written), nothing evaluated or saved yet
    ("cvtrain.training.checkpoint:write@2", "SIGKILL", None),
    # the epoch-2 checkpoint half written (checkpoint.tmp/ on disk)
    ("cvtrain.training.checkpoint:rng_states@2", "SIGKILL", None),
    # SIGTERM while the epoch-1 checkpoint is written: it completes, is uploaded, and kept
    ("cvtrain.training.checkpoint:rng_states@1", "SIGTERM",
     "the checkpoint of epoch 1 is kept (also in s3://"),
]


@pytest.mark.parametrize("point, signame, says", POINTS,
                         ids=[f"{p.split(':')[1]}-{s}" for p, s, _ in POINTS])
def test_killed_anywhere_a_rerun_completes_both_copies(point, signame, says, archive, s3,
                                                       tmp_path, uninterrupted):
    results = s3.uri("runs")
    args = job_args(archive, tmp_path, "r", "--results", results)
    run_path = tmp_path / "augment" / "r"
    first = kill_at(point, signame, args)
    if signame == "SIGKILL":
        assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    else:
        assert first.returncode == 75, first.stdout[-2000:] + first.stderr[-3000:]
        assert "stopped by SIGTERM" in first.stderr and says in first.stderr, first.stderr
        assert "Traceback" not in first.stderr
    # never a manifest in the bucket before every file it lists is there
    remote = bucket_files(s3, "runs/augment/r/")
    if runs.MANIFEST in remote:
        listed = json.loads(s3.client.get_object(
            Bucket=s3.bucket, Key="runs/augment/r/" + runs.MANIFEST)["Body"].read())
        assert {f["path"] for f in listed["files"]} <= set(remote)
    assert not any(k.startswith(runs.CHECKPOINT_TRANSIENT) for k in remote)  # nothing half

    again = run_cli(*args, env={"COLUMNS": "200"})
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert_complete_everywhere(s3, run_path, "runs/augment/r/", uninterrupted)


def test_sigterm_in_the_first_second_is_acted_on(archive, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "cvtrain", *job_args(archive, tmp_path, "s")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == checkpoint.EXIT_TERMINATED, out[-2000:] + err[-3000:]
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_killed_after_training_with_best_weights_restored_resumes_to_the_same_model(
        archive, tmp_path):
    """Early stopping restores its best weights when training ends: a run killed after its
    last checkpoint, before the model was saved, does the same on rerun (no epoch trained
    twice, none added)."""
    es = ["--set", "training.early_stopping.monitor=val_accuracy",
          "--set", "training.early_stopping.patience=1"]
    whole = run_cli(*job_args(archive, tmp_path, "whole", *es))
    assert whole.returncode == 0, whole.stderr[-3000:]
    args = job_args(archive, tmp_path, "cut", *es)
    first = kill_at(f"cvtrain.training.checkpoint:write@{EPOCHS}", "SIGKILL", args)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert checkpoint.read(tmp_path / "augment" / "cut").finished
    again = run_cli(*args, env={"COLUMNS": "200"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resumed from the checkpoint of epoch {EPOCHS}" in again.stdout
    assert "epoch 1/" not in again.stdout and f"epoch {EPOCHS}/" not in again.stdout
    assert outcome(tmp_path / "augment" / "cut") == outcome(tmp_path / "augment" / "whole")
