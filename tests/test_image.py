"""The default image (docker/Dockerfile): Keras on JAX with CUDA from the pinned wheels of
docker/requirements.txt.

Without an engine: the lock pins every dependency pyproject.toml declares for the image,
within pyproject's ranges. ``@pytest.mark.docker``: the image CI builds (``make image`` on the
debootstrapped base) has the lock's versions, JAX's CUDA plugin and no TensorFlow, and trains
a CIFAR job and a birds job on the CPU (JAX's fallback) to verified run folders that
``cvtrain predict`` in the same image reads.
"""

from __future__ import annotations

import json
import os
import re
import tomllib

import pytest
from conftest import ROOT, run_cli
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from test_docker import docker, engine, synth_data  # noqa: F401  (fixtures)

from cvtrain import runs

LOCK = ROOT / "docker" / "requirements.txt"


def pins() -> dict[str, str]:
    """name -> version of every ``name==version`` line of the lock (names normalised)."""
    found = {}
    for line in LOCK.read_text().splitlines():
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if match:
            found[canonicalize_name(match[1])] = match[2]
    return found


def image_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in
            project["dependencies"] + project["optional-dependencies"]["gpu"]]


def test_the_lock_pins_every_image_dependency_within_pyprojects_ranges():
    pinned = pins()
    assert "tensorflow" not in pinned and "tensorflow-cpu" not in pinned
    for req in image_requirements():
        name = canonicalize_name(req.name)
        assert name in pinned, f"{LOCK.name} does not pin {req.name} (make lock)"
        assert req.specifier.contains(pinned[name], prereleases=True), \
            f"{LOCK.name} pins {name}=={pinned[name]}, outside pyproject's {req} (make lock)"
    # jax[cuda12]: the plugin and CUDA's libraries as wheels, at JAX's own version
    assert pinned["jax-cuda12-plugin"] == pinned["jax"] == pinned["jaxlib"]
    assert "nvidia-cudnn-cu12" in pinned


# ---------------------------------------------------------------------------- in the image

PROBE = """
import importlib.metadata as m, importlib.util as u, json, os
import jax
print(json.dumps({"versions": {d.metadata["Name"].lower(): d.version for d in m.distributions()},
                  "tensorflow": u.find_spec("tensorflow") is not None,
                  "keras_backend": os.environ.get("KERAS_BACKEND"),
                  "platforms": sorted({d.platform for d in jax.devices()})}))
"""


@pytest.mark.docker
def test_the_image_has_the_locks_versions_jax_cuda_plugin_and_no_tensorflow(engine):  # noqa: F811
    done = docker("run", "--rm", "--network", "none", "--entrypoint", "python", engine,
                  "-c", PROBE)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    versions = {canonicalize_name(k): v for k, v in found["versions"].items()}
    differ = {name: (version, versions.get(name)) for name, version in pins().items()
              if versions.get(name) != version}
    assert differ == {}, f"image vs {LOCK.name}: {differ}"
    assert "jax-cuda12-plugin" in versions and "jax-cuda12-pjrt" in versions
    assert found["tensorflow"] is False
    assert found["keras_backend"] == "jax"
    assert found["platforms"] == ["cpu"]  # no GPU here: JAX falls back to the CPU


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    from cvtrain.data.birds import write_synthetic_cub200

    return write_synthetic_cub200(tmp_path_factory.mktemp("birds"), classes=2, per_class=8,
                                  image_size=32)


def in_container(engine, tmp_path, job, *sets, run_id="img"):  # noqa: F811
    result = run_cli("run", job, "--runner", "docker", "--image", engine, "--gpus", "none",
                     *[a for s in sets for a in ("--set", s)], "--seed", "0",
                     "--out", tmp_path / "runs", "--run-id", run_id,
                     env={"CVTRAIN_CACHE": str(tmp_path / "cache")}, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    # no GPU here: JAX starts on the CPU without its CUDA plugin's failed start-up traceback
    assert "Traceback" not in result.stderr, result.stderr
    run = tmp_path / "runs" / job / run_id
    assert runs.verify(run) == []
    metrics = json.loads((run / runs.METRICS).read_text())
    assert metrics["device"]["backend"] == "jax" and metrics["device"]["type"] == "cpu"
    assert metrics["versions"]["keras"] == pins()["keras"]
    return run, metrics


def predict_in_container(engine, run, data, *more):  # noqa: F811
    return docker("run", "--rm", "--network", "none", "--user", f"{os.getuid()}:{os.getgid()}",
                  "--mount", f"type=bind,source={run},target=/runs/{run.parent.name}/{run.name},"
                  "readonly", "--mount", f"type=bind,source={data},target=/data,readonly",
                  engine, "predict", f"/runs/{run.parent.name}/{run.name}", *more, "--json",
                  timeout=300)


@pytest.mark.docker
def test_the_image_trains_a_cifar_job_and_predicts_with_it(engine, tmp_path, synth_data):  # noqa: F811
    run, metrics = in_container(engine, tmp_path, "basenet", "training.epochs=1",
                                "data.num_classes=5", f"data.path={synth_data}")
    done = predict_in_container(engine, run, synth_data.parent, f"/data/{synth_data.name}")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    doc = json.loads(done.stdout)
    assert doc["errors"] == [] and doc["accuracy"]["images"] == 50
    assert doc["accuracy"]["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)


@pytest.mark.docker
def test_the_image_trains_a_birds_job_and_predicts_with_it(engine, tmp_path, birds):  # noqa: F811
    """Pillow decodes the JPEGs (no TensorFlow in the image); fine-tuning without ImageNet
    weights (nothing can be downloaded here)."""
    run, metrics = in_container(engine, tmp_path, "resnet50_finetune", "model.weights=none",
                                "data.image_size=32", "training.epochs=1",
                                "training.batch_size=4", f"data.path={birds}")
    assert metrics["epochs_run"] == 1
    images = sorted(p.relative_to(birds) for p in birds.rglob("*.jpg"))[:3]
    done = predict_in_container(engine, run, birds, *[f"/data/{p}" for p in images])
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["errors"] == [] and len(doc["predictions"]) == 3
    assert all(len(p["top"]) >= 1 for p in doc["predictions"])


@pytest.mark.docker
def test_tensorflow_asked_in_the_image_is_one_line(engine, tmp_path, synth_data):  # noqa: F811
    result = run_cli("run", "basenet", "--runner", "docker", "--image", engine, "--gpus",
                     "none", "--set", "training.backend=tensorflow", "--set",
                     f"data.path={synth_data}", "--out", tmp_path / "runs",
                     env={"CVTRAIN_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 2, result.stderr
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("cvtrain: error:")]
    assert errors == ["cvtrain: error: training.backend: tensorflow is not installed; pip install "
                      "'cvtrain[cpu] (or cvtrain[tf-gpu])', or choose another backend"]

