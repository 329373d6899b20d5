"""Training as one ``fit``, also for a run resumed within an epoch.

Keras's ``fit`` cannot begin in the middle of an epoch. A run resumed from a checkpoint
taken within one (after ``step`` of its training steps, see
:mod:`cvtrain.training.checkpoint`) trains the rest of that epoch as a ``fit`` of its own
(the dataset's :attr:`~cvtrain.data.pipeline.Splits.partial` stream: the batches that
epoch had left, in the same order), then the later epochs as usual. The callbacks see one
coherent run through :func:`seamed`: training begins and ends once (early stopping keeps
its state and restores its best weights only at the very end), the interrupted epoch's
steps are numbered from where it stopped (the progress bar resumes at its step), and its
metric accumulators are put back when it begins again, so the epoch reports the loss and
accuracy of all its steps, as an uninterrupted run does.

:class:`Interval` says when a checkpoint within an epoch is due
(``training.checkpoint_minutes``); its clock can be replaced, so tests need not wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: the clock of :class:`Interval` (seconds; replaced by tests)
clock: Callable[[], float] = time.monotonic


class Interval:
    """Whether ``minutes`` have passed since the last checkpoint (or since training
    began); 0 or None: never (checkpoints only at the end of each epoch)."""

    def __init__(self, minutes: float | None, now: Callable[[], float] | None = None):
        self.seconds = minutes * 60.0 if minutes else None
        self._now = now
        self.last = self.now()

    def now(self) -> float:
        return (self._now or clock)()

    def due(self) -> bool:
        return self.seconds is not None and self.now() - self.last >= self.seconds

    def reset(self) -> None:
        """A checkpoint was written: the next is due ``minutes`` from now."""
        self.last = self.now()


def seamed(callbacks: list, model, epochs: int, steps: int, resume=None):
    """``callbacks`` as one Keras ``CallbackList`` for every ``fit`` of a run: see the
    module's docstring. ``resume``: the checkpoint the run continues from."""
    import keras

    step = resume.step if resume is not None else 0
    values = resume.metric_values() if step else None

    class Seamed(keras.callbacks.CallbackList):
        def __init__(self):
            super().__init__(callbacks, add_history=True, add_progbar=False, model=model,
                             verbose=0, epochs=epochs, steps=steps)
            self.offset = step  # steps of the current epoch trained before this fit
            self.begun = False
            self.hold_end = False

        def on_train_begin(self, logs=None):
            if not self.begun:
                self.begun = True
                super().on_train_begin(logs)

        def on_train_end(self, logs=None):
            if not self.hold_end:
                super().on_train_end(logs)

        def on_epoch_begin(self, epoch, logs=None):
            nonlocal values
            if values is not None:  # the interrupted epoch, begun again
                variables = model.metrics_variables
                if len(variables) != len(values):
                    raise RuntimeError(f"the checkpoint holds {len(values)} metric values, "
                                       f"the model has {len(variables)}")
                for variable, value in zip(variables, values, strict=True):
                    variable.assign(value)
                values = None
            super().on_epoch_begin(epoch, logs)

        def on_epoch_end(self, epoch, logs=None):
            self.offset = 0
            super().on_epoch_end(epoch, logs)

        def on_train_batch_begin(self, batch, logs=None):
            super().on_train_batch_begin(batch + self.offset, logs)

        def on_train_batch_end(self, batch, logs=None):
            super().on_train_batch_end(batch + self.offset, logs)

    return Seamed()


def fit(model, splits, callbacks: list, initial_epoch: int, last_epoch: int,
        resume=None) -> None:
    """Train epochs ``initial_epoch`` .. ``last_epoch - 1`` (0-based) on ``splits`` with
    ``callbacks``; resumed within epoch ``initial_epoch`` (``resume.step`` > 0), the rest
    of it first. The streams shuffle themselves."""
    steps = splits.steps_per_epoch
    seam = seamed(callbacks, model, last_epoch, steps, resume)
    common = {"validation_data": splits.validation, "callbacks": seam, "verbose": 0,
              "shuffle": False}
    step = resume.step if resume is not None else 0
    if step and initial_epoch < last_epoch:
        if splits.partial is None:
            raise RuntimeError("resumed within an epoch, but the dataset gave no stream "
                               "for the rest of it")
        _build_metrics(model, splits.partial)
        seam.hold_end = True  # training goes on after this epoch
        model.fit(splits.partial, epochs=initial_epoch + 1, initial_epoch=initial_epoch,
                  steps_per_epoch=steps - step, **common)
        seam.hold_end = False
        initial_epoch += 1
        if model.stop_training or initial_epoch >= last_epoch:  # early stopping, or the last
            seam.on_train_end()
            return
    model.fit(splits.train, epochs=last_epoch, initial_epoch=initial_epoch,
              steps_per_epoch=steps, **common)


def _build_metrics(model, stream) -> None:
    """Create the compiled metrics' variables of a loaded model before its first step, so
    that the interrupted epoch's accumulators can be put back into them: on one device
    TensorFlow creates them only when it traces the step. A batch of zeros shaped as the
    stream's goes through the model (inference: no random numbers drawn, no statistics
    moved) and Keras's public ``compute_loss`` and ``compute_metrics``, which build what
    they use; the values put back then replace whatever this left in them. A stream
    without an element spec (a generator, JAX) is built by ``fit`` itself."""
    element_spec = getattr(stream, "element_spec", None)
    if element_spec is None:
        return
    import keras

    def zeros(spec):
        return keras.ops.zeros([1 if d is None else d for d in spec.shape], spec.dtype.name)

    x, y = zeros(element_spec[0]), zeros(element_spec[1])
    y_pred = model(x, training=False)
    model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
    model.compute_metrics(x, y, y_pred)
