"""The machine a run trains on: seeds and determinism, GPU memory, mixed precision, steps
per execution, and a record of what was used (``metrics.json``'s ``device``). Works on
every Keras backend (:mod:`cvtrain.training.backend` imports Keras first)."""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cvtrain.errors import UsageError
from cvtrain.training import batch_parts
from cvtrain.training.backend import CPU_DEVICES_ENV, gpu_on_machine, no_gpu_line, quiet_stderr
from cvtrain.training.provenance import installed_version

if TYPE_CHECKING:
    from cvtrain.spec import JobSpec

#: steps per execution ``auto`` aims for: enough to amortise the per-call overhead, few
#: enough that progress, SIGTERM and the epoch-end work stay prompt
SPE_TARGET = {"cpu": 16, "gpu": 32}


@dataclass
class Gpu:
    name: str
    bfloat16: bool  # compute capability 8.0 or newer (Ampere, Hopper, ...)


def cpu_name() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            return next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")),
                        name)
    except OSError:
        return name


def _capability_at_least_8(value) -> bool:
    try:
        major = int(str(value[0] if isinstance(value, tuple | list) else value).split(".")[0])
    except (ValueError, IndexError):
        return False
    return major >= 8


def gpus(backend: str) -> list[Gpu]:
    """The GPUs the backend sees (memory growth on for TensorFlow, which otherwise takes
    all memory at once)."""
    if backend == "tensorflow":
        import tensorflow as tf

        found = []
        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError:  # already initialised in this process
                pass
            details = tf.config.experimental.get_device_details(gpu)
            found.append(Gpu(details.get("device_name", gpu.name),
                             _capability_at_least_8(details.get("compute_capability", 0))))
        return found
    import jax

    return [Gpu(d.device_kind, _capability_at_least_8(getattr(d, "compute_capability", 0)))
            for d in jax.devices() if d.platform == "gpu"]


def backend_build(backend: str) -> str:
    """The backend's package and version, e.g. ``tensorflow-cpu 2.21.0``, ``jax 0.10.2 (no
    CUDA plugin)``."""
    if backend == "tensorflow":
        for package in ("tensorflow", "tensorflow-cpu"):
            if version := installed_version(package):
                return f"{package} {version}"
        return "TensorFlow"
    plugin = installed_version("jax-cuda12-plugin")
    plugin = f" with jax-cuda12-plugin {plugin}" if plugin else " (no CUDA plugin)"
    return f"jax {installed_version('jax')}{plugin}"


def precision_policy(found: list[Gpu], mixed: bool) -> str:
    """Keras's dtype policy: bfloat16 where every GPU has it (no loss scaling), else
    float16, when mixed precision is on."""
    if not mixed:
        return "float32"
    return "mixed_bfloat16" if found and all(g.bfloat16 for g in found) else "mixed_float16"


def set_determinism(backend: str, on: bool) -> None:
    """Repeatable kernels for seeded runs (TensorFlow: op determinism, under which Keras
    compiles without XLA; JAX: set before it starts, see backend.select_backend)."""
    if backend != "tensorflow":
        return
    import tensorflow as tf

    if on:
        tf.config.experimental.enable_op_determinism()
    else:
        # process-wide state: undo an earlier seeded run in this process (no public API)
        from tensorflow.python.framework import config as tf_config

        tf_config.disable_op_determinism()


def configure_device(spec: JobSpec, seed: int, backend: str) -> dict:
    """Seeds, determinism, mixed precision; returns the device record."""
    import keras

    found = gpus(backend)
    if not found and gpu_on_machine():
        raise UsageError(no_gpu_line(backend, f"{backend_build(backend)} sees none of this "
                                              "machine's GPUs"))
    # reads TensorFlow's threads per op (set before the jobs: batch_parts.configure_threads)
    parts, split_note = batch_parts.decide(spec, backend, bool(found), _cpu_devices())
    devices = replica_devices(backend, spec.training.devices, spec.training.batch_size,
                              bool(found))
    # seeds Python, numpy, Keras and, when installed, TensorFlow (imported for that even on
    # other backends, since tf.data may feed them: quietly)
    with quiet_stderr():
        keras.utils.set_random_seed(seed)
    set_determinism(backend, spec.seed is not None)
    mode = spec.training.mixed_precision
    mixed = mode == "on" or (mode == "auto" and bool(found))
    policy = precision_policy(found, mixed)
    keras.mixed_precision.set_global_policy(policy)
    return {"type": "gpu" if found else "cpu", "gpus": [g.name for g in found],
            "cpu": cpu_name(), "cpu_count": os.cpu_count(), "backend": backend,
            "mixed_precision": mixed, "precision_policy": policy,
            "jit_compile": spec.training.jit_compile, "deterministic": spec.seed is not None,
            "replicas": len(devices), "devices": [str(d) for d in devices],
            "global_batch": spec.training.batch_size,
            "replica_batch": spec.training.batch_size // len(devices),
            "batch_split": parts, "batch_split_note": split_note}


def _cpu_devices() -> int:
    value = os.environ.get(CPU_DEVICES_ENV, "")
    return int(value) if value.isdigit() and int(value) > 1 else 1


def replica_devices(backend: str, setting, batch_size: int, has_gpus: bool) -> list:
    """The devices to train on (``training.devices``): for ``auto`` every GPU the backend
    sees (or the most of them that split the batch evenly: 2 of 3 GPUs for a batch of 32),
    else the first N; without GPUs the CPU (as ``$CVTRAIN_CPU_DEVICES`` devices when that
    is set: how data parallelism is tested on CPUs). An N that is more than there are, or
    that does not split the batch evenly, is refused."""
    kind = "GPU" if has_gpus else "CPU"
    if backend == "tensorflow":
        import tensorflow as tf

        if not has_gpus and _cpu_devices() > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            try:
                tf.config.set_logical_device_configuration(
                    cpu, [tf.config.LogicalDeviceConfiguration()] * _cpu_devices())
            except RuntimeError:  # TensorFlow already started in this process: as it is
                pass
        available = [d.name for d in tf.config.list_logical_devices(kind)]
    else:
        import keras

        available = keras.distribution.list_devices("gpu" if has_gpus else "cpu")
    if setting == "auto":  # as many as there are, or fewer so that the batch splits evenly
        return available[:max(d for d in range(1, max(len(available), 1) + 1)
                              if batch_size % d == 0)]
    n = int(setting)
    if n > len(available):
        raise UsageError(f"training.devices: {n}, but {backend} sees {len(available)} "
                         f"{kind}{'s' if len(available) != 1 else ''}; expected auto or at "
                         f"most {len(available)}")
    if batch_size % n:
        raise UsageError(f"training.batch_size: {batch_size} does not split evenly between "
                         f"{n} devices; expected a multiple of {n} (or fewer devices)")
    return available[:n]


@contextlib.contextmanager
def data_parallel(backend: str, devices: list):
    """Build, compile, load and train inside this block: one device as usual; several in
    data parallel with the engine's own means (TensorFlow's MirroredStrategy, Keras's
    DataParallel distribution on JAX), gradients summed over the replicas of each global
    batch."""
    if len(devices) < 2:
        yield
        return
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.distribute.MirroredStrategy(devices=devices).scope():
            yield
        return
    import keras

    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    try:
        yield
    finally:
        keras.distribution.set_distribution(None)


def steps_per_execution(setting, steps_per_epoch: int, device_type: str,
                        mirrored: bool = False) -> int:
    """Training steps per compiled call. Epochs must stay whole (the stream spans all
    epochs, and an execution never stops mid-way), so the value divides the steps per
    epoch: ``auto`` takes the largest divisor up to :data:`SPE_TARGET`, a number that does
    not divide is refused with the ones that do. ``mirrored`` (TensorFlow's
    MirroredStrategy over several devices): 1, since Keras 3 fails there with more
    (keras-team/keras#19246, "You must feed a value for placeholder tensor")."""
    if mirrored:
        if setting not in ("auto", 1):
            raise UsageError(f"training.steps_per_execution: {setting}: TensorFlow on several "
                             "devices runs one step per execution (a Keras 3 limitation, "
                             "keras-team/keras#19246); expected auto or 1, or the jax backend")
        return 1
    divisors = [d for d in range(1, steps_per_epoch + 1) if steps_per_epoch % d == 0]
    if setting == "auto":
        return max(d for d in divisors if d <= SPE_TARGET.get(device_type, 16))
    if steps_per_epoch % setting:
        shown = ", ".join(map(str, divisors[:12])) + (", ..." if len(divisors) > 12 else "")
        raise UsageError(f"training.steps_per_execution: {setting} does not divide the "
                         f"{steps_per_epoch} steps of an epoch; expected auto or one of "
                         f"{shown}")
    return setting
