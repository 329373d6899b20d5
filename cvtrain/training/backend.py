"""Which Keras backend a run trains on, chosen before Keras is first imported.

``training.backend`` in the spec, or ``auto``: ``$KERAS_BACKEND`` when set, else
TensorFlow when it is installed, else JAX. Keras reads its backend once per process, so a
process that already runs Keras on another backend is refused with one line (run in a new
process). TensorFlow's C++ start-up notices are kept off the terminal.

On JAX, compiled steps are kept on disk (JAX's persistent compilation cache, under
``<cache>/jax-compiled``): compiling is most of a short run's first epoch (13-47 s a job on
a GPU), and a rerun, a resumed run or another job with the same network then loads it.
``$JAX_COMPILATION_CACHE_DIR`` moves it; ``CVTRAIN_JAX_CACHE=off`` turns it off.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

from cvtrain.errors import UsageError

BACKENDS = ("tensorflow", "jax")
#: what to install for each backend
EXTRAS = {"tensorflow": "cvtrain[cpu] (or cvtrain[tf-gpu])", "jax": "cvtrain[jax]"}


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


#: the NVIDIA driver lists each GPU here, and the container toolkit shows a container its own
NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")
NVIDIA_DEV = Path("/dev")


def gpu_on_machine() -> bool:
    """Whether this process could use an NVIDIA GPU: the driver shows one, and
    ``CUDA_VISIBLE_DEVICES`` does not hide them all."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    with contextlib.suppress(OSError):
        if any(NVIDIA_PROC.iterdir()):
            return True
    return any(NVIDIA_DEV.glob("nvidia[0-9]*"))


#: what to do when the backend cannot use this machine's GPU
GPU_HELP = {
    "tensorflow": "set training.backend: jax (Keras on JAX with CUDA: cvtrain[gpu], the default "
                  "image), or use a TensorFlow built with CUDA (cvtrain[tf-gpu], make image-tf)",
    "jax": "JAX needs its CUDA plugin (pip install 'cvtrain[gpu]', or the default image) and an "
           "NVIDIA driver for CUDA 12 (JAX's warning above says which is missing)",
}
CPU_ON_PURPOSE = "; or set CUDA_VISIBLE_DEVICES= (empty) to train on the CPU on purpose"


def no_gpu_line(backend: str, why: str) -> str:
    """The one line for a machine whose GPU the backend cannot use."""
    return f"training.backend: {backend}: {why}: {GPU_HELP[backend]}{CPU_ON_PURPOSE}"


def resolve_backend(requested: str) -> str:
    """The backend a spec's ``training.backend`` means on this machine."""
    if requested != "auto":
        return requested
    if "keras" in sys.modules:
        import keras

        return keras.backend.backend()
    env = os.environ.get("KERAS_BACKEND")
    if env:
        if env not in BACKENDS:
            raise UsageError(f"$KERAS_BACKEND={env}: expected one of {', '.join(BACKENDS)} "
                             "(or set training.backend)")
        return env
    return "tensorflow" if installed("tensorflow") or not installed("jax") else "jax"


#: ``off``: no persistent JAX compilation cache
JAX_CACHE_ENV = "CVTRAIN_JAX_CACHE"
#: the cache's bound on disk (JAX evicts the least recently used entries beyond it)
JAX_CACHE_BYTES = 4 << 30
JAX_CACHE_MIN_SECONDS = "0.5"


def jax_cache_dir() -> str | None:
    """Where compiled JAX programs are kept, or None when the cache is off."""
    if os.environ.get(JAX_CACHE_ENV, "").lower() in ("off", "0", "false", "no"):
        return None
    from cvtrain.paths import cache_dir

    return os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(cache_dir() / "jax-compiled")


def _configure_jax_cache() -> None:
    """Before JAX starts (it reads these once, at its first compilation)."""
    folder = jax_cache_dir()
    if folder is None:
        return
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    # steps and evaluations take seconds to compile; the many tiny programs around them
    # (random-number kernels, casts) are not worth a file each
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", JAX_CACHE_MIN_SECONDS)
    if installed("filelock"):  # JAX needs it to evict; without, the cache is unbounded
        os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(JAX_CACHE_BYTES))


#: split the CPU into this many devices, so that data-parallel training (several GPUs)
#: can be run and tested on a machine without GPUs
CPU_DEVICES_ENV = "CVTRAIN_CPU_DEVICES"


def select_backend(requested: str, deterministic: bool = False) -> str:
    """Import Keras on the backend ``requested`` resolves to; return its name."""
    name = resolve_backend(requested)
    if not installed(name):
        if gpu_on_machine():
            raise UsageError(no_gpu_line(name, "not installed here, and this machine has a GPU"))
        raise UsageError(f"training.backend: {name} is not installed; pip install "
                         f"'{EXTRAS[name]}', or choose another backend")
    if "keras" in sys.modules:
        import keras

        if keras.backend.backend() != name:
            raise UsageError(f"training.backend: {name}: Keras already runs on "
                             f"{keras.backend.backend()} in this process; run cvtrain in a "
                             f"new process (or set KERAS_BACKEND={name})")
        return name
    os.environ["KERAS_BACKEND"] = name
    cpu_devices = os.environ.get(CPU_DEVICES_ENV, "")
    if name == "jax" and cpu_devices.isdigit() and int(cpu_devices) > 1:
        # the CPU as N devices (XLA reads this once, when JAX starts)
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
            os.environ["XLA_FLAGS"] = (f"{flags} --xla_force_host_platform_device_count="
                                       f"{cpu_devices}").strip()
    if name == "jax" and deterministic:
        # JAX is repeatable on CPUs; on GPUs XLA needs telling (before JAX starts)
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_gpu_deterministic_ops" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_gpu_deterministic_ops=true".strip()
    if name == "jax":
        _configure_jax_cache()
        _cpu_only_without_a_gpu()
    _import_quietly(name)
    return name


def _cpu_only_without_a_gpu() -> None:
    """No GPU here: JAX on the CPU alone. Otherwise JAX's CUDA plugin (the default image
    has it) tries to start CUDA and prints a traceback before falling back to the CPU."""
    from cvtrain.training.provenance import installed_version

    if ("JAX_PLATFORMS" not in os.environ and not gpu_on_machine()
            and installed_version("jax-cuda12-plugin")):
        os.environ["JAX_PLATFORMS"] = "cpu"


@contextlib.contextmanager
def quiet_stderr():
    """Keep what C++ libraries print to file descriptor 2 off the terminal (TensorFlow 2.21
    prints its start-up notices before any log-level setting applies); show it after all
    if the block fails."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _import_quietly(name: str) -> None:
    with quiet_stderr():
        if name == "tensorflow":
            import tensorflow  # noqa: F401
        import keras  # noqa: F401
