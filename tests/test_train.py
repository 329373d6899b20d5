"""Training end to end: every CIFAR job through the CLI on a synthetic archive in the
official format, complete run folders, a model that learns, repeatable seeded runs."""

import csv
import io
import json

import pytest
from conftest import JOBS, run_cli
from rich.console import Console

from cvtrain import runs
from cvtrain.console import RunLog
from cvtrain.data.cifar import write_synthetic_cifar100
from cvtrain.spec import load_spec
from cvtrain.training import run_job

pytestmark = pytest.mark.slow  # every test here trains a model

CIFAR_JOBS = sorted(p.stem for p in (JOBS / "cifar").glob("*.yaml"))
RUN_FILES = {runs.SPEC, runs.METRICS, runs.HISTORY, runs.CURVES, runs.MODEL, runs.LOG}


@pytest.fixture(scope="session")
def tiny_archive(tmp_path_factory):
    """25 classes, 12 training and 4 test images each: enough for one epoch of any job."""
    dest = tmp_path_factory.mktemp("cifar-tiny")
    return write_synthetic_cifar100(dest, classes=25, train_per_class=12, test_per_class=4,
                                    fmt="binary", seed=1)


@pytest.fixture(scope="session")
def learnable_archive(tmp_path_factory):
    dest = tmp_path_factory.mktemp("cifar-learn")
    return write_synthetic_cifar100(dest, classes=10, train_per_class=150, test_per_class=40,
                                    fmt="python", seed=2)


def quiet_log():
    return RunLog(Console(file=io.StringIO(), width=120))


def assert_complete_run(run_path, epochs):
    assert runs.verify(run_path) == []
    manifest = json.loads((run_path / runs.MANIFEST).read_text())
    listed = {f["path"] for f in manifest["files"]}
    assert RUN_FILES <= listed
    assert any(p.startswith(runs.TENSORBOARD + "/") for p in listed), listed
    metrics = json.loads((run_path / runs.METRICS).read_text())
    for key in ("test_accuracy", "test_loss", "best_epoch", "epochs_run", "wall_seconds",
                "train_images_per_second", "seed", "versions", "device", "git_revision",
                "dataset", "report"):
        assert key in metrics, key
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_loss"] > 0
    assert metrics["epochs_run"] == epochs and len(metrics["dataset"]["sha256"]) == 64
    assert {"tensorflow", "keras", "numpy", "python", "cvtrain"} <= set(metrics["versions"])
    with open(run_path / runs.HISTORY) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == epochs and float(rows[0]["val_loss"]) > 0
    assert (run_path / runs.CURVES).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return metrics


@pytest.mark.parametrize("job", CIFAR_JOBS)
def test_each_cifar_job_runs_one_epoch_through_the_cli(job, tiny_archive, tmp_path):
    result = run_cli("run", f"jobs/cifar/{job}.yaml", "--set", f"data.path={tiny_archive}",
                     "--set", "training.epochs=1", "--out", tmp_path, "--run-id", "t1",
                     "--seed", "3", env={"COLUMNS": "160"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    run_path = tmp_path / job / "t1"
    metrics = assert_complete_run(run_path, epochs=1)
    spec = load_spec(run_path / runs.SPEC)  # the resolved spec is itself a valid job file
    assert spec.training.epochs == 1 and spec.seed == 3
    report = load_spec(JOBS / f"cifar/{job}.yaml").report
    assert metrics["report"]["test_accuracy"] == report.test_accuracy
    # the summary table puts the report's number beside ours
    assert "report" in result.stdout and "difference" in result.stdout
    assert f"-> {run_path}" in result.stdout and "run folder" in result.stdout
    log = (run_path / runs.LOG).read_text()
    assert "epoch 1/1" in log and "test accuracy" in log


def test_a_complete_run_id_is_reused_never_overwritten(tiny_archive, tmp_path):
    args = ["run", "basenet", "--set", f"data.path={tiny_archive}", "--set",
            "training.epochs=1", "--out", tmp_path, "--run-id", "same"]
    assert run_cli(*args).returncode == 0
    manifest = (tmp_path / "basenet" / "same" / runs.MANIFEST).read_bytes()
    again = run_cli(*args, env={"COLUMNS": "200"})  # same spec: nothing to train, exit 0
    assert again.returncode == 0, again.stderr
    assert "is already complete" in again.stdout and "epoch 1/1" not in again.stdout
    assert (tmp_path / "basenet" / "same" / runs.MANIFEST).read_bytes() == manifest
    other = run_cli(*args[:-2], "--run-id", "same", "--set", "training.epochs=2")
    assert other.returncode == 2, other.stderr
    assert "(training.epochs: 1 then, 2 now)" in other.stderr, other.stderr
    assert "repeat the options it was started with (--set training.epochs=1)" in other.stderr
    assert (tmp_path / "basenet" / "same" / runs.MANIFEST).read_bytes() == manifest


def test_missing_data_is_one_clear_line(tmp_path):
    result = run_cli("run", "basenet", "--set", f"data.path={tmp_path}/nothing-here.tar.gz",
                     "--out", tmp_path)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "nothing-here.tar.gz" in result.stderr
    assert not list((tmp_path / "basenet").glob("*/manifest.json"))


def test_basenet_learns_on_synthetic_data(learnable_archive, tmp_path, keras_globals):
    spec = load_spec(JOBS / "cifar/normalize.yaml",
                     [f"data.path={learnable_archive}", "data.num_classes=10",
                      "training.epochs=8"], seed=0)
    result = run_job(spec, out=tmp_path, run_id="learn", log=quiet_log())
    m = result.metrics
    # chance is 0.10; a model that learns is far above it
    assert m["test_accuracy"] >= 0.5, m
    history = list(csv.DictReader(open(result.run.file(runs.HISTORY))))
    assert float(history[-1]["loss"]) < float(history[0]["loss"])
    import keras

    model = keras.models.load_model(result.run.file(runs.MODEL))
    assert model.count_params() == m["parameters"]


def test_seeded_runs_repeat_exactly(tiny_archive, tmp_path, keras_globals):
    overrides = [f"data.path={tiny_archive}", "training.epochs=2"]
    spec = load_spec(JOBS / "cifar/augment.yaml", overrides, seed=11)
    a = run_job(spec, out=tmp_path, run_id="a", log=quiet_log()).metrics
    b = run_job(spec, out=tmp_path, run_id="b", log=quiet_log()).metrics
    assert (a["test_loss"], a["test_accuracy"]) == (b["test_loss"], b["test_accuracy"])
    ha = (tmp_path / "augment/a" / runs.HISTORY).read_text().splitlines()
    hb = (tmp_path / "augment/b" / runs.HISTORY).read_text().splitlines()
    strip = [[c for i, c in enumerate(line.split(",")) if i != 5] for line in ha]  # not seconds
    assert strip == [[c for i, c in enumerate(line.split(",")) if i != 5] for line in hb]


def test_early_stopping_restores_best_weights(tiny_archive, tmp_path, keras_globals):
    spec = load_spec(JOBS / "cifar/earlystop.yaml",
                     [f"data.path={tiny_archive}", "training.epochs=6",
                      "training.early_stopping.patience=1", "training.optimizer.learning_rate=2"],
                     seed=5)
    result = run_job(spec, out=tmp_path, run_id="es", log=quiet_log())
    m = result.metrics
    rows = list(csv.DictReader(open(result.run.file(runs.HISTORY))))
    val_acc = [float(r["val_accuracy"]) for r in rows]
    assert m["weights_restored"] and m["best_epoch_monitor"] == "val_accuracy"
    assert m["best_epoch"] == 1 + val_acc.index(max(val_acc))
    # it stops `patience` epochs after the best one, or at the epoch limit
    assert m["epochs_run"] == min(6, m["best_epoch"] + 1)


def test_data_synth_cli_writes_both_official_archives(tmp_path):
    from cvtrain.data.cifar import load_cifar100

    for fmt, name in (("binary", "cifar-100-binary.tar.gz"), ("python", "cifar-100-python.tar.gz")):
        result = run_cli("data", "synth", "cifar100", tmp_path / fmt, "--classes", "3",
                         "--train-per-class", "4", "--test-per-class", "2", "--format", fmt)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str(tmp_path / fmt / name)
        data = load_cifar100(tmp_path / fmt / name, num_classes=3, progress=False)
        assert data.x_train.shape == (12, 32, 32, 3) and data.x_test.shape == (6, 32, 32, 3)


def test_gpu_settings_run_on_cpu(tiny_archive, tmp_path, keras_globals):
    """Mixed precision and XLA, what a GPU run uses, forced on here on the CPU. The run sets
    the global mixed_float16 policy and turns op determinism off; ``keras_globals`` puts
    both back even when an assertion here fails."""
    spec = load_spec(JOBS / "cifar/augment.yaml",
                     [f"data.path={tiny_archive}", "training.epochs=1",
                      "training.mixed_precision=on", "training.jit_compile=on",
                      "training.steps_per_execution=3"])  # no seed: XLA stays on
    m = run_job(spec, out=tmp_path, run_id="gpuish", log=quiet_log()).metrics
    assert m["device"]["mixed_precision"] is True
    assert m["device"]["precision_policy"] == "mixed_float16"  # no GPU: no bfloat16 check
    assert m["device"]["steps_per_execution"] == 3
    assert m["test_loss"] == m["test_loss"]  # not NaN: float32 softmax output under float16
