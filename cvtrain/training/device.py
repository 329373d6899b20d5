"""The machine a run trains on: TensorFlow imported quietly, seeds and determinism, GPU
memory growth, mixed precision, and a record of what was used (``metrics.json``'s
``device``)."""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cvtrain.spec import JobSpec


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up notices (oneDNN, CPU features) kept off the
    terminal: TensorFlow 2.21 prints them before any log-level setting applies. Whatever
    it printed is shown after all if the import fails."""
    if "tensorflow" in sys.modules:
        return
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def cpu_name() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            return next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")),
                        name)
    except OSError:
        return name


def configure_device(spec: JobSpec, seed: int) -> dict:
    """Seeds, determinism, GPU memory growth, mixed precision; returns the device record."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process
            pass
    keras.utils.set_random_seed(seed)
    if spec.seed is not None:
        # repeatable to the bit on CPU; on GPU at some speed cost, which the user asked for.
        # (Keras turns XLA off under op determinism.)
        tf.config.experimental.enable_op_determinism()
    else:
        # process-wide state: undo an earlier seeded run in this process (no public API)
        from tensorflow.python.framework import config as tf_config

        tf_config.disable_op_determinism()
    mode = spec.training.mixed_precision
    mixed = mode == "on" or (mode == "auto" and bool(gpus))
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
             for gpu in gpus]
    return {"type": "gpu" if gpus else "cpu", "gpus": names, "cpu": cpu_name(),
            "cpu_count": os.cpu_count(), "mixed_precision": mixed,
            "jit_compile": spec.training.jit_compile, "deterministic": spec.seed is not None}
