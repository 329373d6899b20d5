"""Checkpoints, so an interrupted run continues where it stopped.

``<run>/checkpoint/`` holds, after every completed epoch, and within an epoch every
``training.checkpoint_minutes`` and when a stop is requested (at a pause between two
executions of the training step):

- ``model.keras``        the model with its optimizer state
- ``rng.npz``            the states of the model's random generators (dropout, augmentation),
                         which ``model.keras`` does not hold: restored, a resumed run draws
                         exactly what an uninterrupted one would have
- ``metrics.npz``        within an epoch: the epoch's metric accumulators so far (loss and
                         accuracy totals and counts), so the epoch reports what it would have
- ``best.weights.npz``   early stopping's best weights so far, when it restores them
- ``state.json``         epochs completed, training steps done of the next one (0 at an
                         epoch's end), whether training is over (all epochs, or early
                         stopping), the run's seed, early-stopping state, seconds spent; a
                         manifest (:mod:`cvtrain.manifest`) of the files above

It is replaced atomically (written beside, then renamed), so a run killed at any moment
leaves either the previous epoch's checkpoint or the new one, never half of one. A copy
that mixes two epochs (an upload cut between files) fails the checksums in
``state.json`` and is not used. A finished run deletes it once every copy of the run is
complete: ``model.keras`` in the run folder is the result.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvtrain import manifest
from cvtrain.errors import EXIT_TERMINATED  # noqa: F401 - where runs' users look for it
from cvtrain.runs import CHECKPOINT, CHECKPOINT_TRANSIENT

DIR = CHECKPOINT
STATE = "state.json"
MODEL = "model.keras"
BEST = "best.weights.npz"
RNG = "rng.npz"
METRICS = "metrics.npz"


@dataclass
class Resume:
    """What a checkpoint says about an interrupted run."""

    epoch: int  # epochs completed
    finished: bool  # training is over: all epochs done, or early stopping ended it
    seed: int
    elapsed_seconds: float
    early_stopping: dict | None
    path: Path
    step: int = 0  # training steps done of epoch ``epoch + 1`` (0: at the epoch's end)
    epoch_seconds: float = 0.0  # seconds those steps took

    def describe(self) -> str:
        """Where this checkpoint is: ``epoch 3``, or ``epoch 4 step 17`` within one."""
        return point(self.epoch, self.step)

    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    def load_model(self):
        """The model as it was after the checkpoint's epoch: weights, optimizer, compile
        settings and the random generators' states."""
        import keras

        # registers InParts, which a checkpoint of a split run holds
        from cvtrain.training import parts_model  # noqa: F401

        model = keras.models.load_model(self.model_path)
        states = rng_states(model)
        file = self.path / RNG
        if states and file.is_file():
            with np.load(file) as npz:
                saved = [npz[f"s{i}"] for i in range(len(npz.files))]
            if len(saved) == len(states):
                for variable, value in zip(states, saved, strict=True):
                    variable.assign(value)
        return model

    def metric_values(self) -> list[np.ndarray] | None:
        """The interrupted epoch's metric accumulators (None at an epoch's end)."""
        file = self.path / METRICS
        if not self.step or not file.is_file():
            return None
        with np.load(file) as npz:
            return [npz[f"m{i}"] for i in range(len(npz.files))]

    def best_weights(self) -> list[np.ndarray] | None:
        file = self.path / BEST
        if not file.is_file():
            return None
        with np.load(file) as npz:
            return [npz[f"w{i}"] for i in range(len(npz.files))]


def read(run_path: Path) -> Resume | None:
    """The checkpoint of an incomplete run folder, or None when it has none it can use
    (absent, unreadable, or files that are not the ones its state was written with)."""
    path = Path(run_path) / DIR
    try:
        state = json.loads((path / STATE).read_text())
    except (OSError, ValueError):
        return None
    if not (path / MODEL).is_file() or not manifest.well_formed(state):
        return None
    if manifest.problems(path, state):
        return None
    return Resume(epoch=int(state["epoch"]), finished=bool(state.get("finished")),
                  seed=int(state["seed"]),
                  elapsed_seconds=float(state.get("elapsed_seconds", 0.0)),
                  early_stopping=state.get("early_stopping"), path=path,
                  step=int(state.get("step", 0)),
                  epoch_seconds=float(state.get("epoch_seconds", 0.0)))


def point(epoch: int, step: int = 0) -> str:
    """A checkpoint's place in words: ``epoch 3`` (3 epochs completed), or ``epoch 4 step
    17`` (17 training steps done of the 4th)."""
    return f"epoch {epoch + 1} step {step}" if step else f"epoch {epoch}"


def rng_states(model) -> list:
    """The state variables of the model's SeedGenerators, in a stable order."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def write(run_path: Path, model, epoch: int, seed: int, elapsed_seconds: float,
          early_stopping: dict | None, best_weights: list | None,
          finished: bool = False, step: int = 0, epoch_seconds: float = 0.0) -> None:
    """Save the checkpoint of ``epoch`` completed epochs, replacing the previous one;
    ``finished``: no epoch follows (the last one, or early stopping ended training).
    ``step``: within the next epoch, after that many training steps (its metric
    accumulators are saved too; ``epoch_seconds``: the time they took). On JAX, inside
    ``fit``, the model's variables must be synced first (``model.jax_state_sync()``)."""
    final = Path(run_path) / DIR
    tmp, old = (final.with_name(name) for name in CHECKPOINT_TRANSIENT)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    model.save(tmp / MODEL)
    states = rng_states(model)
    if states:
        np.savez(tmp / RNG, **{f"s{i}": np.asarray(v) for i, v in enumerate(states)})
    if step:
        np.savez(tmp / METRICS, **{f"m{i}": np.asarray(v)
                                   for i, v in enumerate(model.metrics_variables)})
    if best_weights is not None:
        np.savez(tmp / BEST, **{f"w{i}": w for i, w in enumerate(best_weights)})
    # state.json last, a manifest of the files it goes with (an upload sends it last, too)
    (tmp / STATE).write_text(json.dumps(manifest.build(
        tmp, [p.name for p in sorted(tmp.iterdir())], epoch=epoch, step=step,
        finished=finished, seed=seed, elapsed_seconds=round(elapsed_seconds, 3),
        epoch_seconds=round(epoch_seconds, 3), early_stopping=early_stopping), indent=2))
    # two renames: at every instant either checkpoint/ or checkpoint.old/ is whole
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def recover(run_path: Path) -> None:
    """After a kill between the two renames of :func:`write`, put the old checkpoint back."""
    final = Path(run_path) / DIR
    tmp, old = (final.with_name(name) for name in CHECKPOINT_TRANSIENT)
    if not final.exists() and old.exists():
        os.replace(old, final)
    shutil.rmtree(tmp, ignore_errors=True)


def remove(run_path: Path) -> None:
    for name in (DIR, *CHECKPOINT_TRANSIENT):
        shutil.rmtree(Path(run_path) / name, ignore_errors=True)
