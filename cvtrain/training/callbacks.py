"""The Keras callbacks of a run, each epoch in this order: the epoch's row in
``history.csv``, its TensorBoard scalars and its line on the terminal, the progress bar,
early stopping (whose state survives a restart), then the checkpoint and the results
upload. Between two executions of the training step, the checkpointer also writes a
checkpoint within the epoch when ``training.checkpoint_minutes`` have passed since the
last one, or when a stop is requested (then the stop follows). None of them needs
TensorFlow. :func:`cvtrain.training.fitting.fit` runs them as one coherent run, also when
resumed within an epoch.
"""

from __future__ import annotations

import csv
import time

from cvtrain import runs, stop
from cvtrain.console import RunLog
from cvtrain.errors import StorageError
from cvtrain.spec import JobSpec


def make_callbacks(spec: JobSpec, run: runs.RunFolder, log: RunLog, splits, epochs: int,
                   seed: int, resume, elapsed_before: float, uploader, kept=None):
    """Keras callbacks: epoch timing, history.csv and TensorBoard scalars, progress, early
    stopping, then the checkpoints (each epoch's, those within an epoch, the one a stop
    request leaves) and the results upload (in that order). ``kept``
    (:class:`cvtrain.training.interrupt.Kept`) learns of each checkpoint."""
    import keras

    from cvtrain.training import checkpoint
    from cvtrain.training.fitting import Interval
    from cvtrain.training.metrics import f32

    steps_per_epoch = splits.steps_per_epoch
    interval = Interval(spec.training.checkpoint_minutes)
    # the interrupted epoch of a run resumed within it: the seconds it had taken
    carried = {resume.epoch: resume.epoch_seconds} if resume is not None and resume.step else {}

    class EpochRecorder(keras.callbacks.Callback):
        """Times the training part of each epoch (validation excluded), appends history.csv
        as each epoch ends and prints one line per epoch."""

        def __init__(self, rows: list[dict]):
            super().__init__()
            self.rows = rows
            with open(run.file(runs.HISTORY), "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(runs.HISTORY_COLUMNS)
                writer.writerows([[r[c] for c in runs.HISTORY_COLUMNS] for r in rows])

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter() - carried.pop(epoch, 0.0)
            self._train_s = None

        def epoch_seconds(self) -> float:
            return time.perf_counter() - self._t0

        def on_test_begin(self, logs=None):
            if self._train_s is None:
                self._train_s = time.perf_counter() - self._t0

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            seconds = time.perf_counter() - self._t0
            lr = self.model.optimizer.learning_rate
            row = {"epoch": epoch + 1, **{k: f32(logs.get(k)) for k in (
                       "loss", "accuracy", "val_loss", "val_accuracy")},
                   "seconds": round(seconds, 3),
                   "learning_rate": f32(keras.ops.convert_to_numpy(lr))}
            row["train_seconds"] = self._train_s if self._train_s is not None else seconds
            self.rows.append(row)
            with open(run.file(runs.HISTORY), "a", newline="") as fh:
                csv.writer(fh).writerow([row[c] for c in runs.HISTORY_COLUMNS])
            if events is not None:
                events.write(epoch, {k: row[k] for k in ("loss", "accuracy", "val_loss",
                                                         "val_accuracy", "learning_rate")})
            log.epoch_line(row, epochs)

        def on_train_end(self, logs=None):
            if events is not None:
                events.close()

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        """EarlyStopping whose counters and best weights survive a restart."""

        def state(self) -> dict:
            best = self.best if self.best is None else float(self.best)
            return {"wait": int(self.wait), "best": best, "best_epoch": int(self.best_epoch)}

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if resume is not None and resume.early_stopping:
                self.wait = resume.early_stopping["wait"]
                if resume.early_stopping["best"] is not None:
                    self.best = resume.early_stopping["best"]
                self.best_epoch = resume.early_stopping["best_epoch"]
                self.best_weights = resume.best_weights()

    class Checkpointer(keras.callbacks.Callback):
        """Saves the checkpoint of each completed epoch, then syncs the run folder: one
        unit a stop request waits for, acted on right after it. Between two executions of
        the training step, saves one within the epoch when it is due (``interval``) or a
        stop is requested, and acts on the request; at the epoch's last step a request
        waits for the epoch's own checkpoint, after its validation."""

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch  # epochs completed

        def on_train_batch_end(self, batch, logs=None):
            step = batch + 1  # training steps done of this epoch
            if step >= steps_per_epoch:
                return
            if splits.within_epoch and (interval.due() or stop.requested()):
                # (on JAX, self.model first syncs the model's variables with the loop's)
                self._save(self.model, self.epoch, step, finished=False)
            stop.check()

        def on_epoch_end(self, epoch, logs=None):
            finished = epoch + 1 >= epochs or bool(self.model.stop_training)
            self._save(self.model, epoch + 1, 0, finished)
            if not finished:
                stop.check()

        def _save(self, model, epoch: int, step: int, finished: bool) -> None:
            es_state = early.state() if early is not None else None
            best = early.best_weights if early is not None and early.restore_best_weights else None
            elapsed = elapsed_before + time.perf_counter() - t_attempt
            with stop.deferred():
                checkpoint.write(run.path, model, epoch, seed, elapsed, es_state, best,
                                 finished=finished, step=step,
                                 epoch_seconds=recorder.epoch_seconds() if step else 0.0)
                mirrored = uploader is not None and self._mirror(
                    checkpoint.point(epoch, step))
            interval.reset()
            if kept is not None:
                kept.epoch(epoch, remote=mirrored, step=step)

        def _mirror(self, where: str) -> bool:
            """Sync the run folder to the results; a failure (after the transfer's own
            retries) is said and tried again at the next checkpoint: training goes on,
            only the finish must reach the results."""
            try:
                uploader.sync()
                return True
            except StorageError as exc:
                log.print(f"[yellow]results[/]: the upload of the checkpoint of {where} "
                          f"failed ({exc}); trying again at the next checkpoint")
                return False

    try:
        from cvtrain.training.events import EpochScalars

        events = EpochScalars(run.file(runs.TENSORBOARD))
    except ImportError as exc:  # the tensorboard package is a dependency; say so if it broke
        events = None
        log.print(f"[yellow]tensorboard[/]: no event files ({exc}); history.csv has the same "
                  "numbers")
    rows = [] if resume is None else read_history(run)[:resume.epoch]
    recorder = EpochRecorder(rows)
    callbacks = [recorder]
    if log.interactive:
        callbacks.insert(0, log.progress_callback(splits.steps_per_epoch, epochs))
    es = spec.training.early_stopping
    early = None
    if es is not None:
        early = ResumableEarlyStopping(monitor=es.monitor, patience=es.patience,
                                       restore_best_weights=es.restore_best_weights, verbose=0)
        callbacks.append(early)
    callbacks.append(Checkpointer())
    t_attempt = time.perf_counter()
    return recorder, callbacks


def read_history(run: runs.RunFolder) -> list[dict]:
    """The rows of an earlier attempt's history.csv (for a resumed run)."""
    try:
        text = run.file(runs.HISTORY).read_text(encoding="utf-8")
    except OSError:
        return []
    return [{**row, "train_seconds": row["seconds"]} for row in runs.parse_history(text)]
