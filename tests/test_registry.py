"""The registries and the spec's own checks: every (model, dataset) pair is either built or
refused at validation, the schema's unions come from the registries, and a new dataset is
one module."""

import itertools
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import JOBS, ROOT, run_cli

from cvtrain.data.registry import get_dataset, list_datasets
from cvtrain.errors import UsageError
from cvtrain.models import build_model, list_models
from cvtrain.spec import (
    SpecError,
    check_local_paths,
    input_kind,
    json_schema,
    load_spec,
    local_paths,
    validate,
)
from cvtrain.spec.checks import models_for

#: options that keep every pair small and offline: random-init weights, small birds images
#: (128 px gives 4x4 backbone maps, the least a valid-padding conv head takes)
SMALL_DATA = {"cub200": {"image_size": 128}}


def minimal_doc(model: str, dataset: str) -> dict:
    model_opts = {"name": model}
    if "weights" in list_models()[model].options.model_fields:
        model_opts["weights"] = "none"
    return {"name": "pair", "data": {"dataset": dataset, **SMALL_DATA.get(dataset, {})},
            "model": model_opts}


PAIRS = list(itertools.product(sorted(list_models()), sorted(list_datasets())))


@pytest.mark.parametrize("model, dataset", PAIRS, ids=[f"{m}-on-{d}" for m, d in PAIRS])
def test_every_model_dataset_pair_is_built_or_refused_at_validation(model, dataset):
    doc = minimal_doc(model, dataset)
    accepts = list_models()[model].options.accepts
    provides = list_datasets()[dataset].provides
    if not set(accepts) & set(provides):
        with pytest.raises(SpecError) as err:
            validate(doc, "pair.yaml")
        message = str(err.value)
        assert message.startswith(f"pair.yaml: model.name: {model} takes ")
        assert message.endswith("expected one of: " + ", ".join(models_for(dataset)))
        assert model not in models_for(dataset)
        return
    spec = validate(doc, "pair.yaml")
    kind = input_kind(spec)
    assert kind in accepts and kind in provides
    shape = get_dataset(dataset).input_shape(spec.data, kind, spec.model)
    net = build_model(spec.model, shape, 7)
    out = net(np.zeros((1, *shape), np.float32), training=False)
    assert tuple(out.shape) == (1, 7)
    assert model in models_for(dataset)


def test_schema_unions_come_from_the_registries():
    schema = json.loads(json_schema())
    tags = {d["properties"]["dataset"]["const"] for d in schema["$defs"].values()
            if "dataset" in d.get("properties", {})}
    names = {d["properties"]["name"]["const"] for d in schema["$defs"].values()
             if "const" in d.get("properties", {}).get("name", {})}
    assert tags == set(list_datasets())
    assert names == set(list_models())


def test_every_dataset_declares_what_the_rest_of_cvtrain_needs():
    for name, dataset in list_datasets().items():
        assert dataset.name == name
        assert dataset.provides, name
        for field in dataset.options.path_fields:
            assert field in dataset.options.model_fields, (name, field)
        fitting = models_for(name)
        assert fitting, f"no registered model fits {name}"
    with pytest.raises(UsageError, match="unknown dataset 'mnist'; expected one of: cifar100"):
        get_dataset("mnist")


@pytest.mark.parametrize("overrides, key, words", [
    (["model.name=basenet"], "model.name", "basenet takes tiny_images, but dataset cub200"),
    (["model.dropout=[0.1]"], "model.dropout", "expected 3 rates"),
    (["model.dropout=[0.1, 2, 0.1]"], "model.dropout", "expected rates in [0, 1)"),
    (["data.image_size=64"], "model.padding", "2x2 maps are too small"),
])
def test_birds_spec_problems_are_refused_by_jobs_validate(tmp_path, overrides, key, words):
    job = JOBS / "birds" / "resnet50_maps_convhead.yaml"
    cache = tmp_path / "cache"
    t0 = time.monotonic()
    result = run_cli("jobs", "validate", job, *[a for o in overrides for a in ("--set", o)],
                     env={"CVTRAIN_CACHE": str(cache)})
    assert time.monotonic() - t0 < 10  # a process start: no data, no TensorFlow
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    # the --set that caused it is blamed, with the key it set (or the key it made wrong)
    assert len(lines) == 1 and words in lines[0], lines
    assert lines[0].startswith(f"cvtrain: error: --set {overrides[-1]}: ")
    assert lines[0].endswith(f"(job: {job})") and (key in overrides[-1] or f"{key}: " in lines[0])
    assert not cache.exists()  # nothing downloaded, extracted or cached


def test_a_cifar_job_refuses_birds_models_and_impossible_pooling():
    base = JOBS / "cifar" / "bonus.yaml"
    with pytest.raises(SpecError, match="model.name=resnet50_finetune: resnet50_finetune takes "
                                        "images, but "
                                        "dataset cifar100 provides tiny_images; expected one "
                                        "of: basenet, bonus"):
        load_spec(base, ["model.name=resnet50_finetune"])
    with pytest.raises(SpecError, match=r"model.pooled_blocks=5: expected at most 4"):
        load_spec(base, ["model.pooled_blocks=5"])
    with pytest.raises(SpecError, match=r"model.pooled_blocks=6: 6 max poolings shrink a 32-pixel"):
        load_spec(base, ["model.filters=[8,8,8,8,8,8]", "model.pooled_blocks=6"])


def test_switching_model_by_override_starts_its_options_afresh():
    text = JOBS / "cifar" / "dropout.yaml"
    spec = load_spec(text, ["model.dropout=0.3", "model.name=bonus"])
    assert spec.model.name == "bonus" and spec.model.dropout == 0.3
    assert spec.model.filters == [32, 64, 128, 256]  # bonus's defaults, not BaseNet's keys
    same = load_spec(text, ["model.name=basenet"])
    assert same.model.deep and same.model.batch_norm  # same model: its options stay


def test_local_paths_come_from_the_declared_fields(tmp_path):
    text = JOBS / "birds" / "resnet50_finetune.yaml"
    weights = tmp_path / "w.weights.h5"
    spec = load_spec(text, [f"data.path={tmp_path}", f"model.weights={weights}"])
    assert [(p.key, p.value) for p in local_paths(spec)] == [
        ("data.path", str(tmp_path)), ("model.weights", str(weights))]
    remote = load_spec(text, ["data.path=s3://b/birds.tgz", "model.weights=None"])
    assert local_paths(remote) == []
    assert local_paths(load_spec(text, ["model.weights=imagenet"])) == []
    with pytest.raises(Exception, match=r"model.weights: .*w.weights.h5: no such file or folder; "
                                        r"expected imagenet"):
        check_local_paths(spec)
    weights.write_bytes(b"x")
    check_local_paths(spec)


@pytest.mark.parametrize("content, words", [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00", "not UTF-8 text"),
    ("name: x\ndata: {dataset: cifar100}\n".encode("utf-16"), "not UTF-8 text"),
    ("name: x\n".encode("utf-16-le"), "holds NUL characters"),
])
@pytest.mark.slow
def test_job_files_that_are_not_text_are_one_line(tmp_path, content, words):
    job = tmp_path / "bad.yaml"
    job.write_bytes(content)
    result = run_cli("jobs", "validate", job)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"cvtrain: error: {job}: {words}"), lines
    result = run_cli("run", job)
    assert result.returncode == 2 and "internal error" not in result.stderr


@pytest.mark.slow
def test_a_bad_validation_split_is_a_data_error_not_an_internal_error(tmp_path):
    from cvtrain.data.cifar import write_synthetic_cifar100

    archive = write_synthetic_cifar100(tmp_path, classes=2, train_per_class=2, test_per_class=1)
    result = run_cli("run", "basenet", "--set", f"data.path={archive}", "--set",
                     "data.num_classes=2", "--set", "data.validation_split=0.1", "--out",
                     tmp_path / "runs")
    assert result.returncode == 3, result.stderr
    assert "data.validation_split: 0.1 of 4 training images leaves an empty side" in \
        result.stderr
    assert "internal error" not in result.stderr


TOY_DATASET = textwrap.dedent('''
    """A dataset added as one module: registered, then trained on by an unchanged cvtrain."""
    import hashlib
    from pathlib import Path
    from typing import ClassVar, Literal

    import numpy as np
    from pydantic import Field

    from cvtrain.data.registry import Dataset, DatasetOptions, register_dataset


    class ToyOptions(DatasetOptions):
        dataset: Literal["toy"]
        path: str | None = None
        validation_split: float = Field(0.25, gt=0, lt=1)


    class ToyData:
        def __init__(self):
            rng = np.random.default_rng(0)
            y = np.repeat(np.arange(2), 16)
            x = (rng.random((32, 32, 32, 3)) * 60 + y[:, None, None, None] * 150)
            self.x_train, self.y_train = x.astype(np.uint8), y
            self.x_test, self.y_test = x[::4].astype(np.uint8), y[::4]
            self.class_names = ["dark", "light"]
            self.source = Path("toy")
            self.sha256 = hashlib.sha256(self.x_train.tobytes()).hexdigest()


    @register_dataset
    class Toy(Dataset):
        options: ClassVar = ToyOptions
        provides: ClassVar = ("tiny_images",)

        def input_shape(self, opts, kind, model):
            return (32, 32, 3)

        def load(self, opts, path, *, progress):
            return ToyData()

        def streams(self, spec, data, kind, seed, log, initial_epoch):
            from cvtrain.data.cifar.dataset import Augment
            from cvtrain.data.pipeline import build_splits

            t = spec.training
            return build_splits(data, 2, spec.data.validation_split, False, Augment(),
                                t.batch_size, t.epochs, seed, initial_epoch)
''')


@pytest.mark.slow
def test_a_new_dataset_is_one_module(tmp_path):
    """Registering a dataset (before the schema is first used) is all it takes: the spec
    accepts it, models are matched to it, and a run trains on it end to end (its
    ``streams`` without ``initial_step``, as datasets had it before checkpoints within an
    epoch: the run checkpoints at epoch ends only)."""
    (tmp_path / "toy_dataset.py").write_text(TOY_DATASET)
    script = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import toy_dataset  # registers "toy"
        from cvtrain.spec import spec_from_text
        from cvtrain.training import run_job
        spec = spec_from_text("data: {{dataset: toy}}\\nmodel: {{name: basenet}}\\n"
                              "training: {{epochs: 1, batch_size: 8}}\\n", "toy.yaml",
                              ["name=toy"], seed=0)
        result = run_job(spec, out={str(tmp_path / "runs")!r})
        print("ACCURACY", result.metrics["test_accuracy"], result.metrics["dataset"]["name"])
    ''')
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("ACCURACY"))
    assert line.endswith(" toy")
    assert list((tmp_path / "runs" / "toy").glob("*/manifest.json"))

