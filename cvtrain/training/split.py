"""Each training batch computed in parts side by side, one CPU core each (TensorFlow on a
CPU): ``training.batch_split``.

A small network such as BaseNet cannot keep two cores busy at batch 32: its
convolutions have 3 to 16 channels, and oneDNN's kernels at that size run about as fast on
one thread as on two (BaseNet on prepared batches, 2 cores: 9,900-10,700 images/s with one
thread per op against 10,600-12,600 with two, a script kept out of the repository). Split
into halves, one core each, the same step runs 1.3x faster (BaseNet's compute ceiling in
``benchmarks/throughput.py``: 16,589 against 12,543 images/s; benchmarks/README.md).

The model's forward pass takes each part of the batch through the whole network and joins
the outputs; everything else is Keras's own step on the joined batch (the loss over the
whole batch, the metrics, one gradient, summed by the tape over the parts, one optimizer
update), so the job is unchanged: batch 32, the same mean gradient, to float rounding.
Layers that compute over the batch (BatchNormalization in training) would see each part
alone instead, so models with them are never split.

The parts only run side by side with TensorFlow's threads per op at one (two parts
competing for a pool of two threads per op ran no faster than one part); that setting is
the process's, fixed once TensorFlow starts. So ``auto`` splits only in a process whose
jobs all split (:func:`plan_set`), and only before TensorFlow has started with other
settings.
"""

from __future__ import annotations

import itertools
import os
from typing import TYPE_CHECKING

from cvtrain.errors import UsageError

if TYPE_CHECKING:
    from cvtrain.spec import JobSpec

#: images per part at least, for ``auto``
MIN_PART = 4

#: False once a set of jobs in this process holds one that must not be split: then no
#: job of it changes TensorFlow's threads (they are the process's, fixed at its start)
_set_splits = True


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def splittable(spec: JobSpec) -> bool:
    """Whether the job's model may be split: no statistics over the batch (its options
    say; a built model is checked again by :func:`split_batches`)."""
    return not spec.model.batch_statistics()


def plan_set(specs: list[JobSpec]) -> None:
    """Before a set of jobs runs in this process: ``auto`` splits only if every job of
    it would, so that no job trains with the one thread per op that a split leaves."""
    global _set_splits
    _set_splits = all(splittable(s) and s.training.batch_split != 1 for s in specs)


def batch_parts(spec: JobSpec, backend: str, has_gpus: bool,
                cpu_devices: int = 1) -> tuple[int, str]:
    """How many parts each training batch is computed in, and why (for the device record).
    ``cpu_devices``: the CPU split into that many devices for data parallel. Call before
    TensorFlow's runtime starts: a split sets its threads per op to one."""
    setting = spec.training.batch_split
    if setting == 1:
        return 1, "training.batch_split: 1"
    asked = setting != "auto"
    where = ("a GPU" if has_gpus else f"the {backend} backend" if backend != "tensorflow"
             else f"{cpu_devices} devices" if cpu_devices > 1 else None)
    if where is not None:
        if asked:
            raise UsageError(f"training.batch_split: {setting}: splitting a batch between "
                             f"cores is for TensorFlow on one CPU, not {where}; expected auto "
                             "or 1")
        return 1, f"not split on {where}"
    if not splittable(spec):
        if asked:
            raise UsageError(f"training.batch_split: {setting}: model {spec.model.name} "
                             "computes statistics over the batch (BatchNormalization), "
                             "which a split would change; expected auto or 1")
        return 1, "not split: the model computes statistics over the batch"
    if asked:
        if setting > spec.training.batch_size:
            raise UsageError(f"training.batch_split: {setting} parts of a batch of "
                             f"{spec.training.batch_size}; expected at most "
                             f"{spec.training.batch_size}")
        parts = setting
    else:
        if not _set_splits:
            return 1, "not split: a job of this set must not be"
        parts = min(cores(), spec.training.batch_size // MIN_PART)
        if parts < 2:
            return 1, (f"not split: {cores()} core(s), batches of "
                       f"{spec.training.batch_size} (at least {MIN_PART} images a part)")
    if not _one_thread_per_op():
        if not asked:
            return 1, "not split: TensorFlow already runs here with several threads per op"
        return parts, (f"{parts} parts side by side, but TensorFlow already ran here with "
                       "several threads per op (slower than one each)")
    return parts, f"{parts} parts side by side, one thread per op"


def _one_thread_per_op() -> bool:
    """Set TensorFlow's threads per op to one (before its runtime starts); whether they
    are."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:  # the runtime has started: as it is
        pass
    return tf.config.threading.get_intra_op_parallelism_threads() == 1


def _statistics_layers(layer) -> list[str]:
    import keras

    found = []
    for sub in getattr(layer, "layers", []):
        if isinstance(sub, keras.layers.BatchNormalization):
            found.append(sub.name)
        found.extend(_statistics_layers(sub))
    return found


def split_batches(model, parts: int) -> bool:
    """Make ``model`` (built, TensorFlow) compute its forward pass in ``parts`` parts of
    each batch, joined; returns whether it does. Undo with :func:`whole_batches`."""
    if parts < 2:
        return False
    found = _statistics_layers(model)
    if found:  # the options said otherwise: a builder that does not match its options
        raise RuntimeError(f"batch_split {parts}: {model.name} has BatchNormalization "
                           f"({', '.join(found[:3])}), which a split would change")
    import tensorflow as tf

    whole = type(model).call

    def part(inputs, n, a, b, training, mask):
        # rows a..b of the batch; a part with none (a batch of fewer images than parts,
        # an epoch's last) takes a neighbour's row through and keeps none of its output,
        # which adds nothing to the gradient: oneDNN's convolutions fail on an empty batch
        # (a tf.cond between whole and split batches measured 20 % slower)
        start = tf.minimum(a, n - 1)
        out = whole(model, inputs[start:tf.maximum(b, start + 1)], training=training,
                    mask=mask)
        return out[a - start:b - start]

    def call(inputs, training=None, mask=None):
        n = tf.shape(inputs)[0]
        cuts = [n * i // parts for i in range(parts + 1)]
        return tf.concat([part(inputs, n, a, b, training, mask)
                          for a, b in itertools.pairwise(cuts)], axis=0)

    model.call = call
    # functions traced before are of the whole batch
    model.train_function = model.test_function = model.predict_function = None
    return True


def whole_batches(model) -> None:
    """Undo :func:`split_batches`."""
    if "call" in vars(model):
        del model.call
        model.train_function = model.test_function = model.predict_function = None
