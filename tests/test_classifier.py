"""The raw-image model every run leaves (``classifier.keras``): loaded with plain Keras in a
process that never imports cvtrain, on raw test images it gives the run's test accuracy
(CIFAR on TensorFlow and JAX, loaded on both; the birds jobs, trained once by
tests/test_birds.py, which calls check_birds_classifier); preprocessing inside,
augmentation not; float32 even after mixed precision."""

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import ROOT, run_cli

from cvtrain import runs
from cvtrain.data.birds import load_cub200, write_synthetic_cub200
from cvtrain.data.cifar import FINE_LABEL_NAMES, load_cifar100, write_synthetic_cifar100

SCORE = ROOT / "tests" / "score_classifier.py"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_synthetic_cifar100(tmp_path_factory.mktemp("cifar"), classes=5,
                                    train_per_class=48, test_per_class=12, seed=4)


def score(run_path, images, labels, tmp_path, backend):
    """Accuracy and loss of the run's classifier on uint8 ``images``, in a process with
    only Keras and numpy on ``backend``."""
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", labels)
    done = subprocess.run(
        [sys.executable, str(SCORE), str(run_path), str(tmp_path / "images.npy"),
         str(tmp_path / "labels.npy")], capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3",
             "HOME": str(tmp_path)}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend and result["cvtrain_imported"] is False
    return result


def layer_classes(path) -> set[str]:
    """The class of every layer in a .keras file, nested models' included."""
    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    found = set()

    def walk(node):
        if isinstance(node, dict):
            if "class_name" in node and "config" in node:
                found.add(node["class_name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found


def check_folder(run_path, num_classes):
    assert runs.verify(run_path) == []
    listed = {f["path"] for f in json.loads((run_path / runs.MANIFEST).read_text())["files"]}
    assert {runs.CLASSIFIER, runs.CLASSIFIER_INFO, runs.CLASSES} <= listed
    info = json.loads((run_path / runs.CLASSIFIER_INFO).read_text())
    assert info["model"] == runs.CLASSIFIER and info["classes"] == runs.CLASSES
    assert info["num_classes"] == num_classes and info["dtype_policy"] == "float32"
    assert info["input"]["dtype"] == "uint8" and info["input"]["channels"] == "RGB"
    assert "Lambda" not in layer_classes(run_path / runs.CLASSIFIER)
    return info, json.loads((run_path / runs.METRICS).read_text())


@pytest.mark.slow
@pytest.mark.parametrize("trained_on, mixed", [("tensorflow", "off"), ("jax", "off"),
                                               ("tensorflow", "on")])
def test_cifar_classifier_gives_the_run_accuracy_on_raw_images(trained_on, mixed, archive,
                                                               tmp_path):
    """augment: normalisation inside the classifier, augmentation (a cvtrain layer on JAX)
    not; loaded on both backends whichever it was trained on. Trained in mixed precision
    (float16 on a CPU), the classifier is float32 all the same: its numbers differ from
    the float16 evaluation's by rounding (one prediction in the test split may flip)."""
    pytest.importorskip("jax")
    result = run_cli("run", "augment", "--set", f"data.path={archive}", "--set",
                     "data.num_classes=5", "--set", "training.epochs=2", "--set",
                     f"training.mixed_precision={mixed}", "--seed", "1",
                     "--out", tmp_path / "runs", "--run-id", "r",
                     env={"KERAS_BACKEND": trained_on})
    assert result.returncode == 0, result.stderr[-3000:]
    run_path = tmp_path / "runs" / "augment" / "r"
    info, metrics = check_folder(run_path, 5)
    assert metrics["device"]["backend"] == trained_on
    assert info["input"]["shape"] == [None, 32, 32, 3] and info["input"]["resize"] is None
    assert info["input"]["normalization"] == metrics["dataset"]["normalization"]
    assert info["trained_with"]["backend"] == trained_on
    assert json.loads((run_path / runs.CLASSES).read_text()) == list(FINE_LABEL_NAMES[:5])
    assert "RandomAffine" not in layer_classes(run_path / runs.CLASSIFIER)  # no augmentation
    assert "classifier: classifier.keras takes uint8 RGB images of 32x32" in result.stdout

    policy = "mixed_float16" if mixed == "on" else "float32"
    assert info["trained_with"]["precision_policy"] == policy
    assert metrics["device"]["precision_policy"] == policy

    data = load_cifar100(archive, num_classes=5, progress=False)
    exact = mixed == "off"
    for backend in ("tensorflow", "jax"):
        scored = score(run_path, data.x_test, data.y_test, tmp_path, backend)
        assert scored["accuracy"] == pytest.approx(
            metrics["test_accuracy"], abs=1e-6 if exact else 1 / len(data.y_test) + 1e-6)
        assert scored["loss"] == pytest.approx(metrics["test_loss"], rel=1e-4 if exact else 1e-2)


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    return write_synthetic_cub200(tmp_path_factory.mktemp("birds"), classes=3, per_class=6,
                                  image_size=64, seed=3)


def decoded_test_images(birds_root):
    """The birds' test images decoded as training and ``cvtrain predict`` decode them, uint8."""
    from cvtrain.data.birds.decode import read_rgb

    data = load_cub200(birds_root)
    return np.stack([read_rgb(f) for f in data.test_files]), data.test_labels


def intermediate(run_path, layer, images):
    """What the layer named ``layer`` of the classifier outputs for ``images``."""
    import keras

    model = keras.saving.load_model(run_path / runs.CLASSIFIER)
    part = keras.Model(model.input, model.get_layer(layer).output)
    return np.asarray(part.predict(images, verbose=0), np.float32)


def check_birds_classifier(job, birds, run_path, cache, tmp_path):
    """A birds run's classifier (tests/test_birds.py trains each job through the CLI and
    calls this): resized and preprocessed inside; a head trained on cached features gets
    the backbone that computed them (random weights from the run's seed), composed with
    the head; on raw test images it gives the run's test accuracy."""
    info, metrics = check_folder(run_path, load_cub200(birds).num_classes)
    assert info["input"]["shape"] == [None, None, None, 3]
    assert info["input"]["resize"] == [128, 128]
    assert "preprocess_input" in info["input"]["preprocessing"]

    images, labels = decoded_test_images(birds)
    for backend in ("tensorflow",) if job != "resnet50_features_dense" else ("tensorflow",
                                                                              "jax"):
        scored = score(run_path, images, labels, tmp_path, backend)
        assert scored["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-6)

    import tensorflow as tf

    from cvtrain.data.birds import load_image

    # preprocessing inside the model: what the training pipeline made of the same files
    expected = np.stack([load_image(tf, f, 128).numpy() for f in load_cub200(birds).test_files])
    prepared = intermediate(run_path, "preprocess_input", images)
    np.testing.assert_allclose(prepared, expected, rtol=0, atol=1e-3)
    if job != "resnet50_finetune":  # the backbone is the one whose features the head saw
        import keras

        features = metrics["dataset"]["features"]
        kind = "pooled" if job == "resnet50_features_dense" else "maps"
        cached = np.load(cache / "features" / features["key"] / f"test_{kind}.npy")
        if kind == "pooled":
            got = intermediate(run_path, "pool", images)
        else:
            model = keras.saving.load_model(run_path / runs.CLASSIFIER)
            backbone = next(lay for lay in model.layers if isinstance(lay, keras.Model))
            got = np.asarray(backbone.predict(prepared, verbose=0), np.float32)
        scale = float(np.abs(cached.astype(np.float32)).max())
        np.testing.assert_allclose(got, cached.astype(np.float32), rtol=0,
                                   atol=scale * (2e-3 if kind == "maps" else 1e-5))


@pytest.mark.slow
def test_a_mixed_precision_network_is_saved_in_float32(keras_globals):
    import keras

    from cvtrain.models import build_model
    from cvtrain.spec import load_spec
    from cvtrain.training.raw_image_model import float32_copy

    keras.mixed_precision.set_global_policy("mixed_float16")
    network = build_model(load_spec(ROOT / "jobs/cifar/dropout.yaml").model, (32, 32, 3), 5)
    assert "mixed_float16" in {layer.dtype_policy.name for layer in network.layers}
    copy = float32_copy(network)
    assert {layer.dtype_policy.name for layer in copy.layers} == {"float32"}
    assert keras.mixed_precision.global_policy().name == "mixed_float16"  # left as it was
    x = np.random.default_rng(0).random((4, 32, 32, 3), np.float32)
    np.testing.assert_allclose(np.asarray(copy(x)), np.asarray(network(x), np.float32),
                               atol=1e-2)
    for a, b in zip(copy.get_weights(), network.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_classifier_that_cannot_be_built_leaves_the_run_complete(birds, tmp_path,
                                                                   monkeypatch, keras_globals):
    """A head's backbone weights that cannot be had when the run finishes (ImageNet offline,
    the features from the cache): one line says so and the trained run is kept."""
    import io

    from rich.console import Console

    import cvtrain.data.birds.features as features
    from cvtrain.console import RunLog
    from cvtrain.errors import DataError
    from cvtrain.spec import load_spec
    from cvtrain.training import run_job

    monkeypatch.setenv("CVTRAIN_CACHE", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise DataError("model.weights: imagenet: downloading the ImageNet weights failed")

    monkeypatch.setattr(features, "feature_layers", offline)
    out = io.StringIO()
    done = run_job(load_spec(ROOT / "jobs/birds/resnet50_features_dense.yaml",
                             [f"data.path={birds}", "model.weights=none", "data.image_size=32",
                              "training.epochs=1"], seed=0),
                   out=tmp_path / "runs", log=RunLog(Console(file=out, width=200)))
    assert runs.verify(done.run.path) == []
    assert not done.run.file(runs.CLASSIFIER).exists()
    line = ("classifier: not saved, only model.keras: model.weights: imagenet: downloading the "
            "ImageNet weights failed")
    assert line in out.getvalue() and line in done.run.file(runs.LOG).read_text()
