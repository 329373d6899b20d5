# ruff: noqa: F811 - pytest fixtures imported from s3_server are used as arguments
"""``cvtrain predict`` and ``cvtrain export``: a run's classifier on image files, folders
and a CIFAR archive's test split (local runs and runs in a bucket, checked against their
manifest), one line for what cannot be read, and exports that predict as Keras does."""

import csv
import io
import json
import re

import numpy as np
import pytest
from conftest import fake_run, run_cli
from PIL import Image
from s3_server import s3, s3_server  # noqa: F401 - fixtures
from typer.testing import CliRunner

from cvtrain import runs
from cvtrain.cli import app
from cvtrain.errors import StorageError
from cvtrain.images import Item, batches, collect, decode

# ---------------------------------------------------------------------------- no model


def _png(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)
    return path


def test_images_from_files_folders_and_what_cannot_be_read(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    _png(tmp_path / "pics" / "a.png", rgb)
    _png(tmp_path / "pics" / "sub" / "b.png", rgb[..., 0])  # grey
    _png(tmp_path / "pics" / "sub" / "c.png", np.dstack([rgb, rgb[..., :1]]))  # RGBA
    (tmp_path / "pics" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (tmp_path / "pics" / "notes.txt").write_text("not an image, not looked at")
    _png(tmp_path / "big.png", np.zeros((40, 48, 3), np.uint8))
    (tmp_path / "empty").mkdir()
    items = collect([str(tmp_path / "pics"), str(tmp_path / "big.png"),
                     str(tmp_path / "missing.png"), str(tmp_path / "empty")], ["x"])
    names = [item.name.removeprefix(str(tmp_path) + "/") for item in items]
    assert names == ["pics/a.png", "pics/broken.jpg", "pics/sub/b.png", "pics/sub/c.png",
                     "big.png", "missing.png", "empty"]
    assert items[5].error == "no such file or folder"
    assert items[6].error.startswith("no images in this folder")
    decoded = [decode(item, (32, 32), resize=False) for item in items]
    for pixels in (decoded[0], decoded[2], decoded[3]):
        assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(decoded[0], rgb)
    np.testing.assert_array_equal(decoded[2][..., 1], rgb[..., 0])  # grey as RGB
    assert decoded[1] is None and items[1].error.startswith("not a readable image")
    assert decoded[4] is None
    assert items[4].error == "is 48x40; the model takes 32x32 images (--resize resizes it)"
    big = Item("big", path=tmp_path / "big.png")
    assert decode(big, (32, 32), resize=True).shape == (32, 32, 3)
    assert decode(Item("any", path=tmp_path / "big.png"), None, False).shape == (40, 48, 3)


def test_batches_keep_one_shape_each_and_failures_alone(tmp_path):
    def item(h, w):
        return Item(f"{h}x{w}", pixels=np.zeros((h, w, 3), np.uint8))

    items = [item(8, 8), item(8, 8), item(9, 9), Item("bad", error="no such file or folder"),
             item(8, 8), item(8, 8), item(8, 8)]
    got = [([i.name for i in group], None if images is None else images.shape)
           for group, images in batches(items, 2, None, False)]
    assert got == [(["8x8", "8x8"], (2, 8, 8, 3)), (["9x9"], (1, 9, 9, 3)), (["bad"], None),
                   (["8x8", "8x8"], (2, 8, 8, 3)), (["8x8"], (1, 8, 8, 3))]


def test_a_run_without_a_classifier_says_how_to_get_one(tmp_path):
    # a complete run folder as cvtrain wrote them before the raw-image model
    path = fake_run(tmp_path, "basenet", "old", metrics={}, history=None,
                    files={runs.CLASSES: '["a", "b"]'}).path
    done = CliRunner().invoke(app, ["predict", "basenet/old", "--root", str(tmp_path),
                                    str(tmp_path)])
    assert isinstance(done.exception, StorageError), done.output
    assert str(done.exception) == (
        f"{path}: no classifier.keras (a run trained before cvtrain saved a model that takes "
        f"raw images, or one whose log.txt says why it was not saved); train it again to get "
        f"one: cvtrain run {path}/spec.yaml --out {tmp_path} --force")
    (path / runs.MANIFEST).unlink()
    done = CliRunner().invoke(app, ["export", str(path), "--format", "onnx"])
    assert isinstance(done.exception, StorageError)
    assert "incomplete run (no manifest.json)" in str(done.exception)
    missing = run_cli("predict", tmp_path / "basenet" / "nope", tmp_path)
    assert missing.returncode == 4 and missing.stderr.startswith("cvtrain: error: ")
    assert len(missing.stderr.strip().splitlines()) == 1


def test_export_names_what_is_missing(monkeypatch):
    import importlib.util

    from cvtrain import export

    with pytest.raises(export.ExportError, match="tflite: Keras converts to LiteRT on the "
                                                 "TensorFlow backend only; add --backend"):
        export.requirements("tflite", "jax")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    with pytest.raises(export.ExportError) as err:
        export.requirements("onnx", "tensorflow")
    assert str(err.value) == ("--format onnx: needs the tf2onnx package, which is not "
                              "installed; pip install 'cvtrain[onnx]' (tf2onnx and onnx)")


def test_help_lists_predict_and_export():
    runner = CliRunner()
    shown = runner.invoke(app, ["--help"], prog_name="cvtrain").stdout
    assert "predict" in shown and "export" in shown
    helped = runner.invoke(app, ["predict", "--help"], prog_name="cvtrain").stdout
    # Typer's own notation around the names ({RUN} {IMAGE}... on 0.29; RUN IMAGE... before)
    assert re.search(r"Usage: cvtrain predict \[OPTIONS\] \W?RUN\W? \W?IMAGE\W?\.\.\.", helped)
    for option in ("--top", "--json", "--csv", "--resize", "--root", "--backend"):
        assert option in helped
    helped = runner.invoke(app, ["export", "--help"], prog_name="cvtrain").stdout
    assert "savedmodel" in helped and "onnx" in helped and "tflite" in helped


# ---------------------------------------------------------------------------- a trained run


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from cvtrain.data.cifar import write_synthetic_cifar100

    return write_synthetic_cifar100(tmp_path_factory.mktemp("cifar"), classes=5,
                                    train_per_class=40, test_per_class=8, seed=6)


@pytest.fixture(scope="module")
def trained(archive, tmp_path_factory):
    """A complete normalize run (5 classes, 1 epoch): its results root."""
    root = tmp_path_factory.mktemp("runs")
    done = run_cli("run", "normalize", "--set", f"data.path={archive}", "--set",
                   "data.num_classes=5", "--set", "training.epochs=1", "--seed", "0", "--out",
                   root, "--run-id", "r")
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def _metrics(root):
    return json.loads((root / "normalize" / "r" / runs.METRICS).read_text())


@pytest.mark.slow
def test_predict_on_the_archive_test_split_gives_the_run_accuracy(trained, archive):
    accuracy = _metrics(trained)["test_accuracy"]
    table = run_cli("predict", "normalize/r", "--root", trained, archive, env={"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert table.stderr == ""
    assert "predictions of normalize/r (5 classes)" in table.stdout
    assert "cifar-100-binary.tar.gz:test/0" in table.stdout
    assert (f"accuracy: {accuracy:.4f} (" in table.stdout
            and f"of 40 images with a known class); the run's test accuracy: {accuracy:.4f}"
            in table.stdout)
    as_json = run_cli("predict", trained / "normalize" / "r", archive, "--json", "--top", "2")
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["run"] == "normalize/r" and doc["classes"] == 5 and doc["errors"] == []
    assert len(doc["predictions"]) == 40 and doc["accuracy"]["images"] == 40
    assert doc["accuracy"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
    first = doc["predictions"][0]
    assert len(first["top"]) == 2 and first["top"][0]["probability"] >= first["top"][1][
        "probability"]
    as_csv = run_cli("predict", trained / "normalize" / "r", archive, "--csv", "-k", "1")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == 40 and set(rows[0]) == {"image", "rank", "class", "index",
                                                "probability", "label"}
    assert [r["class"] for r in rows] == [p["top"][0]["class"] for p in doc["predictions"]]
    assert as_csv.stderr.startswith("accuracy: ")  # stdout is the CSV alone


@pytest.mark.slow
def test_image_files_and_one_unreadable(trained, archive, tmp_path):
    from cvtrain.data.cifar import load_cifar100

    data = load_cifar100(archive, num_classes=5, progress=False)
    folder = tmp_path / "pics"
    for i in range(5):
        _png(folder / f"{i}.png", data.x_test[i])
    (folder / "3b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    done = run_cli("predict", trained / "normalize" / "r", folder, "--json", "--batch-size", "2")
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, done.stderr
    assert lines[0].startswith(f"cvtrain: error: {folder / '3b.png'}: not a readable image (")
    assert lines[1] == ("cvtrain: error: 1 of 6 images could not be read (each named above); "
                        "the others were predicted")
    doc = json.loads(done.stdout)
    assert [p["image"] for p in doc["predictions"]] == [str(folder / f"{i}.png")
                                                        for i in range(5)]
    assert [e["image"] for e in doc["errors"]] == [str(folder / "3b.png")]
    assert lines[0].endswith(doc["errors"][0]["error"])
    # PNG is lossless: the same predictions as on the archive's arrays
    whole = json.loads(run_cli("predict", trained / "normalize" / "r", archive,
                               "--json").stdout)["predictions"]
    assert [p["top"] for p in doc["predictions"]] == [p["top"] for p in whole[:5]]


@pytest.mark.slow
def test_predict_a_run_in_a_bucket_fetched_and_checked(trained, archive, s3, tmp_path,
                                                        monkeypatch):
    from cvtrain import storage

    monkeypatch.setenv("CVTRAIN_CACHE", str(tmp_path / "cache"))
    storage.push(trained / "normalize" / "r", s3.uri("results", "normalize", "r") + "/")
    uri = s3.uri("results", "normalize", "r")
    done = run_cli("predict", uri, archive, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["accuracy"]["accuracy"] == pytest.approx(
        _metrics(trained)["test_accuracy"], abs=1e-6)
    assert (tmp_path / "cache" / "runs" / s3.bucket / "results" / "normalize" / "r" /
            runs.CLASSIFIER).is_file()
    s3.client.put_object(Bucket=s3.bucket, Key="results/normalize/r/classes.json",
                         Body=b'["a", "b", "c", "d", "e"]')
    tampered = run_cli("predict", uri, archive)
    assert tampered.returncode == 4
    assert "does not match its manifest.json: classes.json: content differs" in tampered.stderr
    assert len(tampered.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["savedmodel", "onnx", "tflite"])
def test_export_predicts_as_the_keras_model(fmt, trained, archive, tmp_path):
    """Each format written by the CLI, then run by its own runtime here on real test
    images, against the Keras model. CI installs tf2onnx, onnx and onnxruntime (the test
    extra): nothing is skipped."""
    import keras

    from cvtrain.data.cifar import load_cifar100
    from cvtrain.export import run_export

    run_path = trained / "normalize" / "r"
    # a file path without the format's suffix gets it (LiteRT refuses a file without it)
    done = run_cli("export", run_path, "--format", fmt, "--out", tmp_path / "model")
    out = tmp_path / ("model" if fmt == "savedmodel" else f"model.{fmt}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{out}: ")
    assert "same predictions as classifier.keras on 8 random images" in done.stdout
    classes = (out / "classes.json" if fmt == "savedmodel"
               else tmp_path / f"model.{fmt}.classes.json")
    assert json.loads(classes.read_text()) == json.loads((run_path / runs.CLASSES).read_text())
    images = load_cifar100(archive, num_classes=5, progress=False).x_test[:8]
    expected = keras.saving.load_model(run_path / runs.CLASSIFIER).predict(images, verbose=0)
    got = run_export(out, fmt, images)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    if fmt == "onnx":
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        assert json.loads(meta["classes"]) == json.loads(classes.read_text())


@pytest.mark.slow
def test_birds_model_takes_images_of_any_size(tmp_path, monkeypatch):
    """A head on pooled features: its classifier resizes whatever comes, so images of
    several sizes go in batches of one size each."""
    from cvtrain.data.birds import write_synthetic_cub200

    monkeypatch.setenv("CVTRAIN_CACHE", str(tmp_path / "cache"))
    birds = write_synthetic_cub200(tmp_path / "birds", classes=2, per_class=8, image_size=48,
                                   seed=1)
    done = run_cli("run", "resnet50_features_dense", "--set", f"data.path={birds}", "--set",
                   "model.weights=none", "--set", "data.image_size=32", "--set",
                   "training.epochs=1", "--seed", "0", "--out", tmp_path / "runs", "--run-id",
                   "b")
    assert done.returncode == 0, done.stderr[-3000:]
    first = sorted((birds / "images").rglob("*.jpg"))[0]
    Image.open(first).resize((70, 50)).save(tmp_path / "wide.png")
    result = run_cli("predict", tmp_path / "runs" / "resnet50_features_dense" / "b",
                     birds / "images", tmp_path / "wide.png", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert len(doc["predictions"]) == 17 and doc["accuracy"] is None
    assert {t["class"] for p in doc["predictions"] for t in p["top"]} <= {
        "001.Synthetic_bird_1", "002.Synthetic_bird_2"}
