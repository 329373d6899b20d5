"""Steps per execution as one compiled call on JAX (training/loop.py): the same training as
Keras's own loop of one call per batch, the short last batch of an epoch included, and
exact resume."""

import json

import pytest
from conftest import run_cli
from test_backends import jax_only, terminate_after_epoch_1  # noqa: F401 (a fixture)

from cvtrain import runs
from cvtrain.data.cifar import write_synthetic_cifar100
from cvtrain.training.loop import LOOP_ENV, chosen_loop


def test_loop_choice(monkeypatch):
    monkeypatch.delenv(LOOP_ENV, raising=False)
    assert chosen_loop("gpu") == "scan"
    monkeypatch.setenv(LOOP_ENV, "steps")
    assert chosen_loop("gpu") == "steps"
    monkeypatch.setenv(LOOP_ENV, "nonsense")
    assert chosen_loop("gpu") == "scan"


def test_keras_is_the_release_whose_train_function_the_jax_loop_replaces():
    """loop.py hooks Keras 3.15's JAX trainer (``make_train_function``); a newer Keras
    carries keras-team/keras#23527, which does the same itself: then loop.py goes."""
    import keras

    assert keras.__version__.startswith("3.15."), keras.__version__
    assert callable(getattr(keras.Model, "make_train_function", None))


def _result(folder):
    m = json.loads((folder / runs.METRICS).read_text())
    rows = [{k: r[k] for k in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")}
            for r in runs.parse_history((folder / runs.HISTORY).read_text())]
    return m, rows


@pytest.mark.slow
def test_scan_trains_as_keras_own_loop(jax_only, tmp_path):  # noqa: F811
    """BaseNet with augmentation (the ``augment`` job): 495 training images are 16
    batches, the last of 15; at 8 steps per execution the first execution of each epoch
    runs in one call and the second (mixed shapes) batch by batch. Both loops give the same
    curves and test accuracy, to float rounding. (Not the improved model: there batch norm
    makes training so sensitive that a 1e-6 change of the inputs moves weights by 1e-2 in
    8 steps, so the loops agree in distribution only; its exact resume under this loop is
    tested in test_backends.)"""
    archive = write_synthetic_cifar100(tmp_path / "data", classes=5, train_per_class=110,
                                       test_per_class=8, seed=3)
    args = ["run", "augment", "--set", f"data.path={archive}", "--set", "data.num_classes=5",
            "--set", "training.epochs=2", "--set", "training.steps_per_execution=8",
            "--seed", "5", "--out", str(tmp_path)]
    results = {}
    for loop in ("steps", "scan"):
        done = run_cli(*args, "--run-id", loop, env={**jax_only, LOOP_ENV: loop})
        assert done.returncode == 0, done.stderr
        results[loop] = _result(tmp_path / "augment" / loop)
    (m_steps, rows_steps), (m_scan, rows_scan) = results["steps"], results["scan"]
    assert m_scan["device"]["scan_steps"] is True and "scan_steps" not in m_steps["device"]
    assert m_scan["device"]["steps_per_execution"] == 8
    assert len(rows_scan) == len(rows_steps) == 2
    for a, b in zip(rows_steps, rows_scan, strict=True):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    assert m_scan["test_accuracy"] == pytest.approx(m_steps["test_accuracy"], abs=1e-6)


@pytest.mark.slow
def test_scan_resumes_exactly(jax_only, tmp_path):  # noqa: F811
    """SIGTERM after the first epoch's checkpoint, rerun: the result equals an
    uninterrupted run's to the bit, with every execution's random numbers (augmentation)
    carried through the loop and the checkpoint."""
    archive = write_synthetic_cifar100(tmp_path / "data", classes=4, train_per_class=72,
                                       test_per_class=8, seed=4)
    args = ["run", "augment", "--set", f"data.path={archive}", "--set", "data.num_classes=4",
            "--set", "training.epochs=3", "--set", "training.steps_per_execution=3",
            "--seed", "2", "--out", str(tmp_path)]
    env = {**jax_only, LOOP_ENV: "scan"}
    whole = run_cli(*args, "--run-id", "whole", env=env)
    assert whole.returncode == 0, whole.stderr

    terminate_after_epoch_1([*args, "--run-id", "cut"], env, tmp_path / "augment" / "cut")
    resumed = run_cli(*args, "--run-id", "cut", env=env)
    assert resumed.returncode == 0, resumed.stderr
    (m_whole, rows_whole), (m_cut, rows_cut) = (_result(tmp_path / "augment" / r)
                                                for r in ("whole", "cut"))
    assert m_cut["resumed_from_epoch"] >= 1 and m_cut["device"]["scan_steps"] is True
    assert rows_cut == rows_whole
    assert (m_cut["test_accuracy"], m_cut["test_loss"]) == (m_whole["test_accuracy"],
                                                          m_whole["test_loss"])
