"""Checkpoints within an epoch: every ``training.checkpoint_minutes`` and when SIGTERM
comes, at a pause between executions of the training step; a resume continues from that
step with the same batches and ends exactly where an uninterrupted run does, on
TensorFlow and JAX; a kill while one is written leaves the one before it.

The end-to-end tests train ``augment`` (BaseNet with augmentation: random numbers in the
stream on TensorFlow, in the step on JAX) on 495 images: 16 steps an epoch (the last
batch short), 4 per execution, so the pauses come after steps 4, 8 and 12 of each epoch.
Signals come at exact points (``kill_at.py``): right after the Nth time the checkpointer
asked whether a checkpoint was due (three times an epoch)."""

# ruff: noqa: F811 - pytest fixtures imported from other modules are used as arguments
import json
import signal
from types import SimpleNamespace

import pytest
from conftest import kill_at, run_cli
from s3_server import s3, s3_server  # noqa: F401 - fixtures
from test_backends import jax_only  # noqa: F401 - a fixture

from cvtrain import runs
from cvtrain.data.cifar import write_synthetic_cifar100
from cvtrain.training import checkpoint
from cvtrain.training.fitting import Interval

DUE = "cvtrain.training.fitting:Interval.due"
#: every pause between executions is past the interval (0.06 ms)
OFTEN = ["--set", "training.checkpoint_minutes=0.000001"]


def test_the_interval_is_measured_on_its_clock():
    now = [1000.0]
    interval = Interval(5, now=lambda: now[0])
    now[0] += 299
    assert not interval.due()
    now[0] += 1
    assert interval.due() and interval.due()  # until a checkpoint is written
    interval.reset()
    assert not interval.due()
    now[0] += 300
    assert interval.due()
    for never in (0, None):
        idle = Interval(never, now=lambda: now[0])
        now[0] += 1e9
        assert not idle.due()


def test_a_checkpoint_says_where_it_is():
    assert checkpoint.point(3) == "epoch 3"  # three epochs completed
    assert checkpoint.point(3, 17) == "epoch 4 step 17"  # 17 steps of the fourth


class FakeModel:
    """Enough of a Keras model for :func:`fitting.fit`: its ``fit`` drives the callbacks as
    Keras's does (one execution per step) and records what it was asked."""

    def __init__(self, stop_after_epoch=None):
        self.fits, self.stop_training = [], False
        self.metrics_variables = [FakeVariable(), FakeVariable()]
        self.stop_after_epoch = stop_after_epoch

    def fit(self, stream, epochs, initial_epoch, steps_per_epoch, callbacks, **kw):
        self.fits.append((stream, initial_epoch, epochs, steps_per_epoch))
        self.stop_training = False
        callbacks.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            for v in self.metrics_variables:  # reset_metrics()
                v.assign(0.0)
            callbacks.on_epoch_begin(epoch)
            for step in range(steps_per_epoch):
                callbacks.on_train_batch_begin(step)
                callbacks.on_train_batch_end(step)
            self.stop_training = epoch == self.stop_after_epoch
            callbacks.on_epoch_end(epoch, {})
            if self.stop_training:
                break
        callbacks.on_train_end()


class FakeVariable:
    value = None

    def assign(self, value):
        self.value = value


@pytest.mark.parametrize("step, stop_after_epoch, fits, events", [
    # at an epoch's end: one fit, as ever
    (0, None, [("train", 1, 3, 4)],
     ["begin", "epoch 1", 0, 1, 2, 3, "end 1", "epoch 2", 0, 1, 2, 3, "end 2", "train end"]),
    # 3 steps into epoch 2 (0-based 1): its last step as a fit of its own, then epoch 3;
    # one begin, one end, the steps numbered from where it stopped, the accumulators back
    (3, None, [("partial", 1, 2, 1), ("train", 2, 3, 4)],
     ["begin", "epoch 1 [7.0, 8.0]", 3, "end 1", "epoch 2", 0, 1, 2, 3, "end 2",
      "train end"]),
    # early stopping at the end of the resumed epoch: no second fit, training ends
    (3, 1, [("partial", 1, 2, 1)], ["begin", "epoch 1 [7.0, 8.0]", 3, "end 1", "train end"]),
])
def test_a_run_resumed_within_an_epoch_is_one_run_to_its_callbacks(step, stop_after_epoch,
                                                                    fits, events, tmp_path):
    import keras
    import numpy as np

    from cvtrain.training import fitting

    model = FakeModel(stop_after_epoch)
    seen = []

    class Recorder(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append("begin")

        def on_epoch_begin(self, epoch, logs=None):
            values = [v.value and float(v.value) for v in model.metrics_variables]
            seen.append(f"epoch {epoch}" + (f" {values}" if any(values) else ""))

        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)

        def on_epoch_end(self, epoch, logs=None):
            seen.append(f"end {epoch}")

        def on_train_end(self, logs=None):
            seen.append("train end")

    np.savez(tmp_path / checkpoint.METRICS, m0=np.float32(7), m1=np.float32(8))
    resume = checkpoint.Resume(epoch=1, finished=False, seed=0, elapsed_seconds=0,
                               early_stopping=None, path=tmp_path, step=step)
    splits = SimpleNamespace(train="train", partial="partial" if step else None,
                             validation=None, steps_per_epoch=4)
    fitting.fit(model, splits, [Recorder()], 1, 3, resume)
    assert model.fits == fits
    assert seen == events


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_synthetic_cifar100(tmp_path_factory.mktemp("midepoch-data"), classes=5,
                                    train_per_class=110, test_per_class=8, seed=3)


def job_args(archive, out, run_id, *extra):
    return ["run", "augment", "--set", f"data.path={archive}", "--set", "data.num_classes=5",
            "--set", "training.epochs=2", "--set", "training.steps_per_execution=4",
            # early stopping (its state and best weights restored at the very end) sees
            # one run across the fits of a resumed one
            "--set", "training.early_stopping.monitor=val_loss",
            "--set", "training.early_stopping.patience=1",
            "--seed", "5", "--out", str(out), "--run-id", run_id, *extra]


def outcome(run_path):
    """What must equal an uninterrupted run's: test numbers, and every epoch's curves."""
    m = json.loads((run_path / runs.METRICS).read_text())
    rows = runs.parse_history((run_path / runs.HISTORY).read_text())
    return ({k: m[k] for k in ("test_accuracy", "test_loss", "epochs_run", "best_epoch")},
            [(r["epoch"], r["loss"], r["accuracy"], r["val_loss"], r["val_accuracy"])
             for r in rows])


@pytest.fixture(scope="module")
def references(archive, tmp_path_factory, jax_only):
    """The uninterrupted run of the job on each backend, made once when first asked for."""
    out = tmp_path_factory.mktemp("midepoch-reference")
    made = {}

    def reference(backend):
        if backend not in made:
            done = run_cli(*job_args(archive, out, backend), env=env_of(backend, jax_only))
            assert done.returncode == 0, done.stderr[-3000:]
            made[backend] = outcome(out / "augment" / backend)
        return made[backend]

    return reference


def env_of(backend, jax_only):
    return jax_only if backend == "jax" else {"KERAS_BACKEND": "tensorflow"}


# (backend, the pause SIGTERM comes after: 2 is epoch 1 step 8, then the rest of epoch 1
# is a fit of its own and epoch 2 the usual one; 5 is epoch 2 step 8, the last epoch)
CASES = [("tensorflow", 2), ("jax", 5)]


@pytest.mark.slow
@pytest.mark.parametrize("backend, pause", CASES, ids=[c[0] for c in CASES])
def test_sigterm_within_an_epoch_keeps_that_step_and_the_resume_is_exact(
        backend, pause, archive, tmp_path, references, jax_only, s3):
    """SIGTERM between two executions of an epoch: a checkpoint of that step (uploaded to
    the results on TensorFlow), one line saying so, exit 75; rerun, the run continues
    from that step and its curves and test numbers equal the uninterrupted run's to the
    bit (the rest of the interrupted epoch trained on the same batches, its loss and
    accuracy over all its steps)."""
    env = env_of(backend, jax_only)
    remote = ["--results", s3.uri("runs")] if backend == "tensorflow" else []
    args = job_args(archive, tmp_path, "cut", *remote)
    run_path = tmp_path / "augment" / "cut"
    first = kill_at(f"{DUE}@{pause}", "SIGTERM", args, env)
    assert first.returncode == 75, first.stdout[-2000:] + first.stderr[-3000:]
    kept = checkpoint.read(run_path)
    epoch = (pause - 1) // 3  # epochs completed: the checkpointer asks three times an epoch
    assert kept is not None and kept.epoch == epoch and kept.step in (8, 12), kept
    assert not kept.finished and (kept.path / checkpoint.METRICS).is_file()
    lines = first.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in first.stderr, first.stderr
    also = f" (also in {s3.uri('runs')}" if remote else ""
    assert (f"stopped by SIGTERM: the checkpoint of epoch {epoch + 1} step {kept.step} is "
            f"kept{also}") in lines[0], lines[0]
    if remote:  # the checkpoint in the results is this one
        key = f"runs/augment/cut/{runs.CHECKPOINT}/{checkpoint.STATE}"
        state = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=key)["Body"].read())
        assert (state["epoch"], state["step"]) == (epoch, kept.step)

    again = run_cli(*args, env={**env, "COLUMNS": "200"})
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert f"resumed from the checkpoint of epoch {epoch + 1} step {kept.step}" in again.stdout
    assert f"epoch {epoch + 1}/2" in again.stdout and f"epoch {epoch}/2" not in again.stdout
    assert runs.verify(run_path) == [] and not (run_path / runs.CHECKPOINT).exists()
    metrics = json.loads((run_path / runs.METRICS).read_text())
    assert (metrics["resumed_from_epoch"], metrics["resumed_from_step"]) == (epoch, kept.step)
    assert outcome(run_path) == references(backend)


@pytest.mark.slow
def test_checkpoints_every_interval_and_a_kill_while_one_is_written_keeps_the_one_before(
        archive, tmp_path, references):
    """A tiny interval: a checkpoint at every pause (time-triggered, within and at the end
    of each epoch). SIGKILL while the sixth is half written (epoch 2 step 8): the fifth
    (epoch 2 step 4) stands, whole; rerun with the default interval (allowed: it does not
    change the result), the run completes equal to the uninterrupted one."""
    args = job_args(archive, tmp_path, "k")
    run_path = tmp_path / "augment" / "k"
    first = kill_at("cvtrain.training.checkpoint:rng_states@6", "SIGKILL", [*args, *OFTEN])
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    assert (run_path / runs.CHECKPOINT_TRANSIENT[0] / checkpoint.MODEL).is_file()  # half
    checkpoint.recover(run_path)
    kept = checkpoint.read(run_path)
    assert kept is not None and (kept.epoch, kept.step, kept.finished) == (1, 4, False)
    spec = (run_path / runs.SPEC).read_text()
    assert "checkpoint_minutes: 1.0e-06" in spec

    again = run_cli(*args, env={"COLUMNS": "200"})
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    assert "resumed from the checkpoint of epoch 2 step 4" in again.stdout
    assert runs.verify(run_path) == []
    assert outcome(run_path) == references("tensorflow")
