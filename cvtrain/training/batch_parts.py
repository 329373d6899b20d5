"""Whether each training batch is computed in parts side by side, one CPU core each
(TensorFlow on a CPU): ``training.batch_split``, and TensorFlow's threads per op that it
needs. The model that computes a batch in parts is :mod:`cvtrain.training.parts_model`.

A small network such as BaseNet cannot keep two cores busy at batch 32: its
convolutions have 3 to 16 channels, and oneDNN's kernels at that size run about as fast on
one thread as on two (BaseNet on prepared batches, 2 cores: 9,900-10,700 images/s with one
thread per op against 10,600-12,600 with two, a script kept out of the repository). Split
into halves, one core each, the same step runs 1.3x faster (BaseNet's compute ceiling in
``benchmarks/throughput.py``: 16,589 against 12,543 images/s; benchmarks/README.md).

The parts only run side by side with TensorFlow's threads per op at one (two parts
competing for a pool of two threads per op ran no faster than one part). That setting is
the process's, fixed once TensorFlow's runtime starts, so it is set once, by whoever
starts the jobs of a process, before the first: :func:`configure_threads` (one thread per
op only when every one of the jobs splits: a job trained whole with one thread per op
would run on one core). Each job then reads TensorFlow's own setting to know whether it
may split (:func:`decide`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from cvtrain.errors import UsageError

if TYPE_CHECKING:
    from cvtrain.spec import JobSpec

#: images per part at least, for ``auto``
MIN_PART = 4


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def splittable(spec: JobSpec) -> bool:
    """Whether the job's model may be split: no statistics over the batch (its options
    say; a built model is checked again by :func:`cvtrain.training.parts_model.in_parts`)."""
    return not spec.model.batch_statistics()


def gains(spec: JobSpec) -> bool:
    """Whether ``auto`` splits the job's model: only where a split measured >= 1.2x
    faster (the model's options say: ``splits_by_default``). That is BaseNet as Part 1
    builds it, convolutions of 6 and 16 filters that leave the second core idle (basenet,
    normalize and augment: 1.28-1.50x on their compute ceilings, 2 cores;
    ``benchmarks/throughput.py`` against ``--batch-split 1``). ``deep`` BaseNet's
    convolutions of 32 to 128 filters keep both cores busier: 1.13x (641 against 569
    images/s). The birds' feature heads are a few dense layers: the dense head 1.15x, the
    MLP head 0.80x (a script kept out of the repository). Asked for with a number, any
    model without BatchNormalization splits."""
    return spec.model.splits_by_default()


def wanted(spec: JobSpec, backend: str, has_gpus: bool,
           cpu_devices: int = 1) -> tuple[int, str]:
    """How many parts the job asks for here, and why, whatever TensorFlow's threads: what
    :func:`decide` returns where they are one per op. A number that cannot be had is
    refused (:class:`~cvtrain.errors.UsageError`). ``cpu_devices``: the CPU split into that
    many devices for data parallel."""
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
        return setting, f"{setting} parts side by side"
    if not gains(spec):
        return 1, "not split: a split of this model measured under 1.2x faster"
    parts = min(cores(), spec.training.batch_size // MIN_PART)
    if parts < 2:
        return 1, (f"not split: {cores()} core(s), batches of {spec.training.batch_size} "
                   f"(at least {MIN_PART} images a part)")
    return parts, f"{parts} parts side by side"


def decide(spec: JobSpec, backend: str, has_gpus: bool,
           cpu_devices: int = 1) -> tuple[int, str]:
    """How many parts each training batch of the job is computed in, and why (for the
    device record): :func:`wanted`, where TensorFlow runs one thread per op (see
    :func:`configure_threads`); ``auto`` leaves the batch whole elsewhere."""
    parts, note = wanted(spec, backend, has_gpus, cpu_devices)
    if parts < 2:
        return parts, note
    import tensorflow as tf

    threads = tf.config.threading.get_intra_op_parallelism_threads()
    if threads == 1:
        return parts, f"{note}, one thread per op"
    several = f"{threads} threads per op" if threads else "its default threads per op"
    if spec.training.batch_split == "auto":
        return 1, (f"not split: TensorFlow runs {several} in this process (one only where "
                   "every job of the process splits)")
    return parts, f"{note}, but TensorFlow runs {several} here (slower than one each)"


def configure_threads(specs: list[JobSpec]) -> bool:
    """Before the first of the jobs ``specs`` that this process runs (a set, or a single
    job): TensorFlow's threads per op at one when every job splits its batches here,
    else as TensorFlow sets them. Returns whether they are one per op. TensorFlow (and
    Keras on it) is imported only when every job would split on a CPU; a job that would be
    refused (a split that cannot be had, a backend not installed) counts as one that does
    not split, and fails when it runs."""
    from cvtrain.training.backend import (
        CPU_DEVICES_ENV,
        installed,
        resolve_backend,
        select_backend,
    )

    value = os.environ.get(CPU_DEVICES_ENV, "")
    cpu_devices = int(value) if value.isdigit() and int(value) > 1 else 1

    def splits(spec: JobSpec, has_gpus: bool) -> bool:
        try:
            return (resolve_backend(spec.training.backend) == "tensorflow"
                    and wanted(spec, "tensorflow", has_gpus, cpu_devices)[0] >= 2)
        except UsageError:
            return False

    if not specs or not all(splits(s, False) for s in specs) or not installed("tensorflow"):
        return False
    try:
        select_backend("tensorflow")  # TensorFlow, and Keras on it, quietly
    except UsageError:  # Keras already runs on another backend here
        return False
    import tensorflow as tf

    has_gpus = bool(tf.config.list_physical_devices("GPU"))  # starts no runtime
    if not all(splits(s, has_gpus) for s in specs):
        return False
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:  # the runtime has started: as it is
        pass
    return tf.config.threading.get_intra_op_parallelism_threads() == 1
