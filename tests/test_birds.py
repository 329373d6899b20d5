"""Part 3 on synthetic Caltech-UCSD Birds: every birds job end to end, the feature cache,
both layouts, and one-line errors for corrupt or missing images."""

import io
import json
import os
import shutil
import tarfile
import textwrap

import numpy as np
import pytest
from conftest import JOBS, ROOT, run_cli
from rich.console import Console

from cvtrain import runs
from cvtrain.console import RunLog
from cvtrain.data.birds import load_cub200, write_synthetic_cub200
from cvtrain.errors import DataError
from cvtrain.spec import load_spec
from cvtrain.training import run_job

BIRDS_JOBS = ["resnet50_features_dense", "resnet50_features_mlp", "resnet50_maps_convhead",
              "resnet50_finetune"]
# 128 px gives 4x4 backbone maps: the smallest on which head B's 3x3 conv + pool fit
SMALL = ["model.weights=none", "data.image_size=128", "training.epochs=1"]


@pytest.fixture(scope="module")
def birds(tmp_path_factory):
    return write_synthetic_cub200(tmp_path_factory.mktemp("birds"), classes=4, per_class=6,
                                  image_size=64, seed=3)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A fresh, empty CVTRAIN_CACHE for every test (CLI subprocesses inherit it), so whether
    features are extracted or read never depends on which tests ran before."""
    path = tmp_path / "cache"
    monkeypatch.setenv("CVTRAIN_CACHE", str(path))
    return path


def quiet_log():
    return RunLog(Console(file=io.StringIO(), width=120))


def test_birds_jobs_exist_with_the_report_numbers():
    for name in BIRDS_JOBS:
        spec = load_spec(JOBS / "birds" / f"{name}.yaml")
        assert spec.data.dataset == "cub200" and spec.model.name == name
        assert spec.model.weights == "imagenet" and spec.data.image_size == 224
        assert spec.report.test_accuracy is not None
        assert spec.training.epochs == (12 if name == "resnet50_finetune" else 15)


@pytest.mark.slow
@pytest.mark.parametrize("job", BIRDS_JOBS)
def test_each_birds_job_runs_end_to_end_through_the_cli(job, birds, cache, tmp_path):
    sets = [a for s in [f"data.path={birds}", *SMALL] for a in ("--set", s)]
    result = run_cli("run", f"jobs/birds/{job}.yaml", *sets, "--out", tmp_path, "--run-id",
                     "r", "--seed", "1", env={"COLUMNS": "160"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    run_path = tmp_path / job / "r"
    assert runs.verify(run_path) == []
    metrics = json.loads((run_path / runs.METRICS).read_text())
    assert metrics["dataset"]["classes"] == 4 and metrics["epochs_run"] == 1
    assert json.loads((run_path / runs.CLASSES).read_text())[0] == "001.Synthetic_bird_1"
    if job == "resnet50_finetune":  # trains the backbone itself: no feature cache
        assert "features" not in metrics["dataset"]
        assert not (cache / "features").exists()
    else:  # an empty cache: this job extracts, and leaves one entry for the next job
        features = metrics["dataset"]["features"]
        assert features["cache"] == "miss" and features["extraction_seconds"] > 0
        assert "features: extracting with" in result.stdout
        assert [p.name for p in (cache / "features").iterdir()] == [features["key"]]
    if job != "resnet50_features_mlp":  # (dense: the same composition, pooled)
        from test_classifier import check_birds_classifier

        check_birds_classifier(job, birds, run_path, cache, tmp_path)


@pytest.mark.slow
def test_second_head_job_hits_the_feature_cache(birds, cache, tmp_path, monkeypatch,
                                                keras_globals):
    assert not cache.exists()  # fresh: the first job must extract
    done = run_job(load_spec(JOBS / "birds/resnet50_features_dense.yaml",
                             [f"data.path={birds}", *SMALL], seed=2),
                   out=tmp_path, log=quiet_log())
    first = json.loads(done.run.file(runs.METRICS).read_text())
    assert first["dataset"]["features"]["cache"] == "miss"
    assert first["dataset"]["features"]["extraction_seconds"] > 0

    import cvtrain.data.birds.features as features_mod

    def no_extraction(*args, **kwargs):  # (the finish still builds it for classifier.keras)
        raise AssertionError("the backbone ran although the features were cached")

    monkeypatch.setattr(features_mod, "extract", no_extraction)
    for job in ("resnet50_features_mlp", "resnet50_maps_convhead"):
        done = run_job(load_spec(JOBS / f"birds/{job}.yaml", [f"data.path={birds}", *SMALL],
                                 seed=2), out=tmp_path, log=quiet_log())
        features = json.loads(done.run.file(runs.METRICS).read_text())["dataset"]["features"]
        assert features["cache"] == "hit" and features["key"] == first["dataset"]["features"]["key"]
        assert features["extraction_seconds"] == 0
    # another image size is another key: the backbone would have to run
    with pytest.raises(AssertionError, match="backbone ran"):
        run_job(load_spec(JOBS / "birds/resnet50_features_mlp.yaml",
                          [f"data.path={birds}", *SMALL, "data.image_size=96"], seed=2),
                out=tmp_path, log=quiet_log())


def test_2011_layout_loads_the_same_classes_and_split(tmp_path):
    old = load_cub200(write_synthetic_cub200(tmp_path / "a", classes=3, per_class=4, seed=5))
    new = load_cub200(write_synthetic_cub200(tmp_path / "b", classes=3, per_class=4, seed=5,
                                             layout="2011"), layout="2011")
    assert old.class_names == new.class_names
    for a, b in ((old.train_files, new.train_files), (old.test_files, new.test_files)):
        assert [f.split("images/")[1] for f in a] == [f.split("images/")[1] for f in b]
    np.testing.assert_array_equal(old.train_labels, new.train_labels)
    np.testing.assert_array_equal(old.test_labels, new.test_labels)
    # the 2011 root is found from its parent folder as well
    assert load_cub200(tmp_path / "b", layout="2011").class_names == old.class_names


def test_a_tgz_is_extracted_once_and_loads_like_the_folder(birds, tmp_path):
    archive = tmp_path / "CUB_200.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(birds, arcname="CUB_200")
    a = load_cub200(archive)
    b = load_cub200(archive)
    folder = load_cub200(birds)
    assert a.root == b.root and a.class_names == folder.class_names
    assert len(a.train_files) == len(folder.train_files) and a.sha256 != folder.sha256


def _copy(birds, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(birds, dest)
    return dest


@pytest.mark.slow
def test_missing_listed_file_is_one_line_with_its_path(birds, tmp_path):
    copy = _copy(birds, tmp_path)
    victim = sorted((copy / "images").rglob("*.jpg"))[3]
    victim.unlink()
    with pytest.raises(DataError, match=str(victim)):
        load_cub200(copy)
    result = run_cli("run", "resnet50_features_dense", "--set", f"data.path={copy}", "--out",
                     tmp_path / "runs", *[a for s in SMALL for a in ("--set", s)])
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        f"cvtrain: error: {victim}: listed in the 2010 lists but missing"]


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "scrambled"])
def test_corrupt_jpeg_is_one_line_with_its_path(birds, tmp_path, damage):
    copy = _copy(birds, tmp_path)
    victim = sorted((copy / "images").rglob("*.jpg"))[5]
    content = victim.read_bytes()
    if damage == "truncated":
        victim.write_bytes(content[:40])
    else:  # markers intact, the entropy-coded data replaced: only decoding finds it
        victim.write_bytes(content[:3] + bytes(range(256)) * 4 + b"\xff\xd9")
    result = run_cli("run", "resnet50_features_dense", "--set", f"data.path={copy}", "--out",
                     tmp_path / "runs", *[a for s in SMALL for a in ("--set", s)])
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"cvtrain: error: {victim}: not a readable image")
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "runs").rglob("manifest.json"))


@pytest.mark.slow
def test_missing_weights_file_is_a_clear_error(birds, tmp_path):
    result = run_cli("run", "resnet50_features_dense", "--set", f"data.path={birds}",
                     "--set", f"model.weights={tmp_path}/nope.weights.h5", "--out", tmp_path)
    assert result.returncode == 3
    assert f"model.weights: {tmp_path}/nope.weights.h5: no such file or folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "resnet50_features_dense").exists()  # refused before a run folder


#: a sitecustomize that takes the network away the way Python code sees it offline
NO_NETWORK = textwrap.dedent('''
    import socket
    import urllib.error
    import urllib.request

    def _offline(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    urllib.request.urlopen = urllib.request.urlretrieve = _offline
''')


@pytest.mark.slow
def test_imagenet_weights_offline_is_one_line_that_says_what_to_type(birds, tmp_path):
    """No network for the ImageNet weights: one line naming the fix, exit 3 (a data
    problem, not an internal error), and no run folder left behind."""
    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / "sitecustomize.py").write_text(NO_NETWORK)
    env = {"PYTHONPATH": f"{offline}{os.pathsep}{ROOT}", "KERAS_HOME": str(tmp_path / "keras")}
    result = run_cli("run", "resnet50_features_dense", "--set", f"data.path={birds}",
                     "--set", "data.image_size=32", "--set", "training.epochs=1",
                     "--out", tmp_path / "runs", env=env)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cvtrain: error: model.weights: imagenet: downloading the "
                               "ImageNet weights from https://"), lines[0]
    assert "Temporary failure in name resolution" in lines[0]
    assert "`--set model.weights=FILE`" in lines[0] and "`--set model.weights=none`" in lines[0]
    assert "internal error" not in lines[0]
    assert not (tmp_path / "runs" / "resnet50_features_dense").exists()  # nothing half-made
    listed = run_cli("results", "ls", tmp_path / "runs", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


@pytest.mark.slow
def test_no_data_path_is_a_clear_error(tmp_path):
    result = run_cli("run", "resnet50_features_dense", "--out", tmp_path)
    assert result.returncode == 3 and "`--set data.path=FOLDER`" in result.stderr


def test_synth_cub200_cli(tmp_path):
    result = run_cli("data", "synth", "cub200", tmp_path, "--classes", "2", "--per-class", "2",
                     "--image-size", "16", "--layout", "2011")
    assert result.returncode == 0, result.stderr
    data = load_cub200(tmp_path, layout="2011")
    assert data.num_classes == 2 and len(data.train_files) == 2 and len(data.test_files) == 2
    from PIL import Image

    assert Image.open(data.train_files[0]).format == "JPEG"


@pytest.mark.slow
def test_training_batches_keep_to_their_epoch_and_resume_exactly(birds):
    """Each epoch is every training file once, ending with its short batch (fit counts
    ceil(n / batch) steps an epoch), and a stream resumed within an epoch or at an epoch's
    start yields the batches the whole stream does from there."""
    import numpy as np

    from cvtrain.data.birds import load_cub200, training_image_stream

    b = load_cub200(birds)
    files, labels = b.train_files[:10], b.train_labels[:10]

    def batches(first_epoch, first_step=0, epochs=3):
        stream = training_image_stream(files, labels, b.num_classes, 32, 4, epochs, 7,
                                       first_epoch, first_step)
        return [(x.numpy(), y.numpy()) for x, y in stream]

    whole = batches(0)
    assert [len(x) for x, _ in whole] == [4, 4, 2] * 3
    for epoch in range(3):
        seen = np.concatenate([x for x, _ in whole[epoch * 3:epoch * 3 + 3]])
        assert len({row.tobytes() for row in seen}) == 10  # every file once
    orders = [np.concatenate([x for x, _ in whole[e * 3:e * 3 + 3]]) for e in range(2)]
    assert not np.array_equal(orders[0], orders[1])  # each epoch its own order
    for first_epoch, first_step in ((1, 0), (1, 2), (2, 1)):
        tail = whole[first_epoch * 3 + first_step:]
        got = batches(first_epoch, first_step)
        assert len(got) == len(tail)
        assert all(np.array_equal(a[0], c[0]) and np.array_equal(a[1], c[1])
                   for a, c in zip(got, tail, strict=True))
    assert batches(3) == []
