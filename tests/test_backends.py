"""Keras backends: every CIFAR job trains on JAX with TensorFlow hidden (as on a machine
where only JAX is installed), seeded JAX runs repeat and resume exactly, the birds say in
one line that they need TensorFlow, and the settings that depend on the device."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import JOBS, ROOT, run_cli

from cvtrain import runs
from cvtrain.data.cifar import write_synthetic_cifar100
from cvtrain.errors import UsageError
from cvtrain.spec.catalog import job_files
from cvtrain.training import checkpoint
from cvtrain.training.backend import jax_cache_dir, resolve_backend
from cvtrain.training.device import steps_per_execution

CIFAR_JOBS = [p.stem for p in job_files(JOBS / "cifar")]

#: a sitecustomize that makes ``import tensorflow`` fail as if it were not installed
NO_TENSORFLOW = ROOT / "tests" / "no_tensorflow"


@pytest.fixture(scope="module")
def jax_only():
    """The environment of a process that has JAX and no TensorFlow."""
    pytest.importorskip("jax")
    return {"PYTHONPATH": f"{NO_TENSORFLOW}{os.pathsep}{ROOT}", "KERAS_BACKEND": "jax"}


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory):
    return write_synthetic_cifar100(tmp_path_factory.mktemp("cifar"), classes=5,
                                    train_per_class=64, test_per_class=8, seed=2)


def test_the_hidden_tensorflow_is_really_hidden(jax_only):
    done = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True,
                          text=True, env={**os.environ, **jax_only})
    assert done.returncode == 1 and "No module named 'tensorflow'" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("job", CIFAR_JOBS)
def test_every_cifar_job_runs_on_jax_without_tensorflow(job, jax_only, small_archive, tmp_path):
    result = run_cli("run", job, "--set", f"data.path={small_archive}", "--set",
                     "data.num_classes=5", "--set", "training.epochs=2", "--seed", "0",
                     "--out", tmp_path, env=jax_only)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # nothing from TensorFlow, nothing from JAX
    run_path = next((tmp_path / job).iterdir())
    assert runs.verify(run_path) == []
    metrics = json.loads((run_path / runs.METRICS).read_text())
    assert metrics["device"]["backend"] == "jax" and metrics["versions"]["backend"] == "jax"
    assert metrics["epochs_run"] == 2 and 0 <= metrics["test_accuracy"] <= 1
    events = list((run_path / runs.TENSORBOARD).rglob("events.out.tfevents.*"))
    assert {e.parent.name for e in events} == {"train", "validation"}
    assert not (run_path / checkpoint.DIR).exists()


def _start(args, env):
    return subprocess.Popen([sys.executable, "-m", "cvtrain", *args], cwd=ROOT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def terminate_after_epoch_1(args, env, run_folder) -> None:
    """Start ``cvtrain ARGS``, SIGTERM it once the checkpoint of epoch 1 is written, and
    check that it stopped as a terminated run does (exit 75)."""
    proc = _start(args, env)
    state = run_folder / checkpoint.DIR / checkpoint.STATE
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(state.read_text())["epoch"] >= 1:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == checkpoint.EXIT_TERMINATED, err


@pytest.mark.slow
def test_seeded_jax_runs_repeat_and_resume_exactly(jax_only, tmp_path):
    """The improved model (dropout, batch norm) with augmentation: SIGTERM after an epoch,
    rerun, and the result equals an uninterrupted run's, in another process, to the bit
    (so seeded runs repeat, too)."""
    archive = write_synthetic_cifar100(tmp_path / "data", classes=5, train_per_class=110,
                                       test_per_class=8, seed=3)
    # 16 batches an epoch, the last short, 8 per execution
    args = ["run", "dropout", "--set", f"data.path={archive}", "--set", "data.num_classes=5",
            "--set", "data.augment.shift=0.1", "--set", "data.augment.horizontal_flip=true",
            "--set", "training.epochs=2", "--set", "training.steps_per_execution=8",
            "--seed", "5", "--out", str(tmp_path)]
    env = jax_only
    whole = run_cli(*args, "--run-id", "whole", env=env)
    assert whole.returncode == 0, whole.stderr

    terminate_after_epoch_1([*args, "--run-id", "cut"], env, tmp_path / "dropout" / "cut")
    resumed = run_cli(*args, "--run-id", "cut", env=env)
    assert resumed.returncode == 0, resumed.stderr

    def result(run_id):
        folder = tmp_path / "dropout" / run_id
        m = json.loads((folder / runs.METRICS).read_text())
        rows = [{k: r[k] for k in ("epoch", "loss", "accuracy", "val_loss", "val_accuracy")}
                for r in runs.parse_history((folder / runs.HISTORY).read_text())]
        return m["test_accuracy"], m["test_loss"], rows

    metrics = json.loads((tmp_path / "dropout" / "cut" / runs.METRICS).read_text())
    assert metrics["resumed_from_epoch"] == 1
    assert result("cut") == result("whole")


@pytest.mark.slow
@pytest.mark.parametrize("job", ["resnet50_finetune", "resnet50_features_dense"])
def test_birds_train_on_jax_without_tensorflow(job, jax_only, tmp_path):
    """Pillow decodes the birds where TensorFlow is missing: fine-tuning and a head on
    extracted features run to a verified run folder, and a seeded run repeats exactly."""
    from cvtrain.data.birds import write_synthetic_cub200

    birds = write_synthetic_cub200(tmp_path / "birds", classes=2, per_class=12, image_size=32)

    def run(run_id):
        result = run_cli("run", job, "--set", f"data.path={birds}", "--set",
                         "model.weights=none", "--set", "data.image_size=32", "--set",
                         "training.epochs=2", "--set", "training.batch_size=4", "--seed", "3",
                         "--out", tmp_path / "runs", "--run-id", run_id,
                         env={**jax_only, "CVTRAIN_CACHE": str(tmp_path / "cache")})
        assert result.returncode == 0, result.stderr[-3000:]
        run_path = tmp_path / "runs" / job / run_id
        assert runs.verify(run_path) == []
        return json.loads((run_path / runs.METRICS).read_text())

    first, second = run("a"), run("b")
    assert first["device"]["backend"] == "jax" and first["epochs_run"] == 2
    assert first["test_accuracy"] == second["test_accuracy"]
    assert first["test_loss"] == second["test_loss"]


@pytest.mark.slow
def test_jax_keeps_compiled_steps_in_the_cache(jax_only, small_archive, tmp_path):
    """JAX's persistent compilation cache under <cache>/jax-compiled, unless turned off."""
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    args = ["run", "basenet", "--set", f"data.path={small_archive}", "--set",
            "data.num_classes=5", "--set", "training.epochs=1", "--out", tmp_path]
    off = subprocess.run([sys.executable, "-m", "cvtrain", *map(str, args)], cwd=ROOT,
                         env={**env, **jax_only, "CVTRAIN_CACHE": str(tmp_path / "off"),
                              "CVTRAIN_JAX_CACHE": "off"}, capture_output=True, text=True)
    assert off.returncode == 0, off.stderr
    assert not (tmp_path / "off" / "jax-compiled").exists()
    on = subprocess.run([sys.executable, "-m", "cvtrain", *map(str, args)], cwd=ROOT,
                        env={**env, **jax_only, "CVTRAIN_CACHE": str(tmp_path / "on")},
                        capture_output=True, text=True)
    assert on.returncode == 0 and on.stderr == "", on.stderr
    assert list((tmp_path / "on" / "jax-compiled").iterdir())


def test_jax_cache_location(monkeypatch, tmp_path):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR")
    monkeypatch.setenv("CVTRAIN_CACHE", str(tmp_path))
    assert jax_cache_dir() == str(tmp_path / "jax-compiled")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/elsewhere")
    assert jax_cache_dir() == "/elsewhere"
    monkeypatch.setenv("CVTRAIN_JAX_CACHE", "off")
    assert jax_cache_dir() is None


def test_backend_choice(monkeypatch):
    import keras

    assert resolve_backend("jax") == "jax"
    assert resolve_backend("auto") == keras.backend.backend()  # Keras already runs here
    monkeypatch.delitem(sys.modules, "keras")  # as if Keras were not imported yet
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert resolve_backend("auto") == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "theano")
    with pytest.raises(UsageError, match=r"\$KERAS_BACKEND=theano: expected one of"):
        resolve_backend("auto")
    monkeypatch.delenv("KERAS_BACKEND")
    assert resolve_backend("auto") == "tensorflow"  # installed here


def test_another_backend_in_the_same_process_is_refused():
    from cvtrain.training.backend import select_backend

    with pytest.raises(UsageError, match="Keras already runs on tensorflow in this process"):
        select_backend("jax")


def test_a_gpu_shows_when_the_driver_lists_one_unless_cuda_hides_them(monkeypatch, tmp_path):
    from cvtrain.training import backend

    proc, dev = tmp_path / "proc", tmp_path / "dev"
    proc.mkdir()
    dev.mkdir()
    monkeypatch.setattr(backend, "NVIDIA_PROC", proc)
    monkeypatch.setattr(backend, "NVIDIA_DEV", dev)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert not backend.gpu_on_machine()
    (proc / "0000:00:1e.0").mkdir()
    assert backend.gpu_on_machine()
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert not backend.gpu_on_machine()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert backend.gpu_on_machine()
    monkeypatch.setattr(backend, "NVIDIA_PROC", tmp_path / "no-driver")
    assert not backend.gpu_on_machine()
    (dev / "nvidia0").touch()  # a container with the device but no /proc entry
    assert backend.gpu_on_machine()


def test_tensorflow_asked_where_it_is_absent_on_a_gpu_machine_is_one_line(monkeypatch):
    """The default image has no TensorFlow: a job that asks for it on a GPU is told what to
    do, never trained on the CPU."""
    from cvtrain.training import backend

    monkeypatch.setattr(backend, "gpu_on_machine", lambda: True)
    monkeypatch.setattr(backend, "installed", lambda name: name != "tensorflow")
    with pytest.raises(UsageError) as err:
        backend.select_backend("tensorflow")
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith("training.backend: tensorflow: not installed here, and this machine "
                           "has a GPU: set training.backend: jax")
    assert "make image-tf" in line and "CUDA_VISIBLE_DEVICES= (empty)" in line


def test_a_backend_that_sees_no_gpu_on_a_gpu_machine_stops_with_one_line(monkeypatch):
    """TensorFlow without CUDA (tensorflow-cpu here) or JAX without its plugin, on a machine
    whose driver shows a GPU: one line, no silent CPU run."""
    import keras

    from cvtrain.spec import load_spec
    from cvtrain.training import device

    monkeypatch.setattr(device, "gpu_on_machine", lambda: True)
    name = keras.backend.backend()
    with pytest.raises(UsageError) as err:
        device.configure_device(load_spec(JOBS / "cifar" / "basenet.yaml"), 0, name)
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(f"training.backend: {name}: ")
    assert "sees none of this machine's GPUs: " in line
    assert device.backend_build(name) in line


def test_steps_per_execution_keeps_epochs_whole():
    assert steps_per_execution("auto", 352, "cpu") == 16  # the coursework's 11,250 images
    assert steps_per_execution("auto", 352, "gpu") == 32
    assert steps_per_execution("auto", 317, "cpu") == 1  # a prime number of steps
    assert steps_per_execution("auto", 30, "cpu") == 15
    assert steps_per_execution(8, 352, "cpu") == 8
    with pytest.raises(UsageError, match=r"training.steps_per_execution: 16 does not divide "
                                         r"the 30 steps of an epoch; expected auto or one of "
                                         r"1, 2, 3, 5, 6, 10, 15, 30"):
        steps_per_execution(16, 30, "cpu")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_data_parallel_over_two_devices_trains_the_same_model(backend, small_archive, tmp_path):
    """training.devices: the CPU split in two ($CVTRAIN_CPU_DEVICES, as two GPUs would be),
    each global batch of 32 split 16 + 16 with the engine's own data parallelism
    (MirroredStrategy, Keras DataParallel): the same seeded run as on one device, to float
    rounding; what was used is in metrics.json. Asking for more devices than there are, or
    a batch that does not split, is one line."""
    args = ["run", "basenet", "--set", f"data.path={small_archive}", "--set",
            "data.num_classes=5", "--set", "training.epochs=2", "--seed", "0", "--out",
            str(tmp_path)]
    if backend == "tensorflow":
        args += ["--set", "training.steps_per_execution=1"]  # as it must be on several
    results = {}
    for n in (1, 2):
        env = {"KERAS_BACKEND": backend, "CVTRAIN_CPU_DEVICES": str(n)}
        done = run_cli(*args, "--run-id", f"d{n}", env=env)
        assert done.returncode == 0, done.stderr
        results[n] = json.loads((tmp_path / "basenet" / f"d{n}" / runs.METRICS).read_text())
    device = results[2]["device"]
    assert device["replicas"] == 2 and device["replica_batch"] == 16
    assert device["global_batch"] == 32 and len(device["devices"]) == 2
    assert results[1]["device"]["replicas"] == 1
    assert results[2]["test_loss"] == pytest.approx(results[1]["test_loss"], rel=1e-5)
    assert results[2]["test_accuracy"] == pytest.approx(results[1]["test_accuracy"], abs=1e-6)

    env = {"KERAS_BACKEND": backend, "CVTRAIN_CPU_DEVICES": "2"}
    more = run_cli(*args, "--set", "training.devices=3", "--run-id", "d3", env=env)
    assert more.returncode == 2 and len(more.stderr.strip().splitlines()) == 1
    assert "training.devices: 3, but" in more.stderr and "expected auto or at most 2" in \
        more.stderr
    odd = run_cli(*args, "--set", "training.batch_size=33", "--set", "training.devices=2",
                  "--run-id", "odd", env=env)
    assert odd.returncode == 2 and "does not split evenly between 2 devices" in odd.stderr
    # auto takes the most devices that split the batch: 3 CPU devices, a batch of 32 -> 2
    env3 = {"KERAS_BACKEND": backend, "CVTRAIN_CPU_DEVICES": "3"}
    three = run_cli(*args, "--run-id", "auto3", env=env3)
    assert three.returncode == 0, three.stderr
    metrics = json.loads((tmp_path / "basenet" / "auto3" / runs.METRICS).read_text())
    assert metrics["device"]["replicas"] == 2
