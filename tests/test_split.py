"""training.batch_split: each batch's forward and backward pass in parts side by side (one
core each) on TensorFlow on a CPU: the same step to float rounding, never for models with
statistics over the batch, and chosen per process (TensorFlow's threads are the process's)."""

import json

import numpy as np
import pytest
from conftest import JOBS, run_cli
from conftest import model_options as options

from cvtrain.data.cifar import write_synthetic_cifar100
from cvtrain.errors import UsageError
from cvtrain.models import build_model, list_models
from cvtrain.spec import load_spec
from cvtrain.training import split


def job(name="basenet", *overrides):
    return load_spec(JOBS / "cifar" / f"{name}.yaml", list(overrides))


@pytest.mark.parametrize("name", sorted(list_models()))
def test_a_model_that_says_it_has_no_batch_statistics_has_no_batch_normalization(name):
    opts = options(name)
    model = build_model(opts, opts.example_input_shape, 5)
    found = split._statistics_layers(model)
    assert bool(found) == opts.batch_statistics(), (name, found)


def test_basenet_has_batch_statistics_only_with_batch_norm():
    assert not options("basenet").batch_statistics()
    assert options("basenet", batch_norm=True).batch_statistics()


@pytest.fixture
def decide(monkeypatch):
    """batch_parts with the machine's cores and TensorFlow's threads set by the test."""
    state = {"cores": 2, "one_thread": True}
    monkeypatch.setattr(split, "cores", lambda: state["cores"])
    monkeypatch.setattr(split, "_one_thread_per_op", lambda: state["one_thread"])
    monkeypatch.setattr(split, "_set_splits", True)

    def run(spec, backend="tensorflow", gpus=False, cpu_devices=1, **machine):
        state.update(machine)
        return split.batch_parts(spec, backend, gpus, cpu_devices)

    return run


def test_auto_splits_a_model_without_batch_statistics_one_part_per_core(decide):
    assert decide(job("augment"))[0] == 2
    assert decide(job("deeper"), cores=16)[0] == 8  # at least 4 images a part of 32
    parts, note = decide(job("basenet", "training.batch_size=6"), cores=16)
    assert parts == 1 and "batches of 6" in note


@pytest.mark.parametrize("spec_name,machine,why", [
    ("dropout", {}, "statistics over the batch"),  # BatchNormalization
    ("bonus", {}, "statistics over the batch"),
    ("basenet", {"cores": 1}, "1 core"),
    ("basenet", {"one_thread": False}, "several threads per op"),  # TensorFlow started
])
def test_auto_leaves_the_batch_whole_and_says_why(decide, spec_name, machine, why):
    parts, note = decide(job(spec_name), **machine)
    assert parts == 1 and why in note


@pytest.mark.parametrize("where", [{"backend": "jax"}, {"gpus": True}, {"cpu_devices": 2}])
def test_auto_does_not_split_off_tensorflow_on_one_cpu_and_a_number_is_refused(decide, where):
    assert decide(job("basenet"), **where)[0] == 1
    with pytest.raises(UsageError, match=r"^training\.batch_split: 2: .*expected auto or 1"):
        decide(job("basenet", "training.batch_split=2"), **where)


def test_a_number_is_taken_or_refused_with_the_reason(decide):
    assert decide(job("basenet", "training.batch_split=3"), cores=1)[0] == 3
    parts, note = decide(job("basenet", "training.batch_split=2"), one_thread=False)
    assert parts == 2 and "several threads per op" in note  # asked for: split all the same
    assert decide(job("dropout", "training.batch_split=1"))[0] == 1
    with pytest.raises(UsageError, match="BatchNormalization.*expected auto or 1"):
        decide(job("dropout", "training.batch_split=2"))
    with pytest.raises(UsageError, match="expected at most 32"):
        decide(job("basenet", "training.batch_split=33"))


def test_a_set_with_one_job_that_cannot_split_splits_none(decide):
    split.plan_set([job("basenet"), job("augment")])
    assert decide(job("basenet"))[0] == 2
    split.plan_set([job("basenet"), job("dropout")])
    parts, note = decide(job("basenet"))
    assert parts == 1 and "set" in note
    assert decide(job("basenet", "training.batch_split=2"))[0] == 2  # asked for: split


def test_the_spec_refuses_a_value_that_is_not_auto_or_a_count():
    from cvtrain.spec.schema import SpecError

    with pytest.raises(SpecError, match="batch_split.*expected auto or an integer >= 1"):
        job("basenet", "training.batch_split=half")


def _step_weights(parts, x, y, seed=0):
    """The weights of BaseNet after one SGD step on (x, y), the batch in ``parts``."""
    import keras

    keras.utils.set_random_seed(seed)
    model = build_model(options("basenet"), (32, 32, 3), 5)
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    split.split_batches(model, parts)
    logs = model.train_on_batch(x, y, return_dict=True)
    ev = model.evaluate(x, y, verbose=0, return_dict=True, batch_size=len(x))
    predicted = model.predict(x, verbose=0, batch_size=len(x))
    split.whole_batches(model)
    assert "call" not in vars(model)
    return [w.numpy() for w in model.weights], logs, ev, predicted


@pytest.mark.parametrize("batch", [32, 18, 1])  # 1: one part is empty
def test_a_split_step_is_the_whole_batch_step_to_float_rounding(batch, keras_globals):
    rng = np.random.default_rng(batch)
    x = rng.normal(size=(batch, 32, 32, 3)).astype("float32")
    y = np.eye(5, dtype="float32")[rng.integers(0, 5, batch)]
    whole, logs1, ev1, p1 = _step_weights(1, x, y)
    parts, logs2, ev2, p2 = _step_weights(2, x, y)
    moved = sum(float(np.abs(w - w0).max()) for w, w0 in zip(whole, _initial(), strict=True))
    assert moved > 1e-4  # the step did something
    for a, b in zip(whole, parts, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for d1, d2 in ((logs1, logs2), (ev1, ev2)):
        assert d1.keys() == d2.keys()
        for k in d1:
            np.testing.assert_allclose(d1[k], d2[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)


def _initial():
    import keras

    keras.utils.set_random_seed(0)
    return [w.numpy() for w in build_model(options("basenet"), (32, 32, 3), 5).weights]


def test_a_model_with_batch_normalization_is_never_split(keras_globals):
    model = build_model(options("basenet", batch_norm=True), (32, 32, 3), 5)
    with pytest.raises(RuntimeError, match="BatchNormalization"):
        split.split_batches(model, 2)
    assert not split.split_batches(model, 1)


@pytest.mark.slow
def test_a_run_splits_on_this_cpu_and_learns_what_the_whole_batch_does(tmp_path):
    """Through the CLI, in a process of its own as a user runs it: with 2 cores or more
    the batch is split (metrics.json says so); the curves match the unsplit run's to float
    rounding."""
    archive = write_synthetic_cifar100(tmp_path / "data", classes=4, train_per_class=40,
                                       test_per_class=10, seed=3)
    results = {}
    for value in ("auto", "1"):
        done = run_cli("run", "basenet", "--set", f"data.path={archive}", "--set",
                       "data.num_classes=4", "--set", "training.epochs=2", "--set",
                       f"training.batch_split={value}", "--seed", "5", "--out", tmp_path,
                       "--run-id", f"split-{value}", env={"COLUMNS": "200"})
        assert done.returncode == 0, done.stderr[-3000:]
        results[value] = json.loads(
            (tmp_path / "basenet" / f"split-{value}" / "metrics.json").read_text())
        if value == "auto" and split.cores() >= 2:
            assert "each batch in 2 parts side by side" in done.stdout
    auto, whole = results["auto"], results["1"]
    assert whole["device"]["batch_split"] == 1
    assert auto["device"]["batch_split"] == (2 if split.cores() >= 2 else 1)
    for key in ("test_accuracy", "test_loss"):
        assert auto[key] == pytest.approx(whole[key], rel=1e-3, abs=1e-3), key
