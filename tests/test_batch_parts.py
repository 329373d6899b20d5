"""training.batch_split: each batch's forward and backward pass in parts side by side (one
core each) on TensorFlow on a CPU, as a Keras model (InParts): the same step to float
rounding, never for models with statistics over the batch, by default only for the
networks it speeds up, and TensorFlow's threads per op set once for the jobs of a process."""

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import JOBS, ROOT, run_cli
from conftest import model_options as options

from cvtrain.data.cifar import write_synthetic_cifar100
from cvtrain.errors import UsageError
from cvtrain.models import build_model, list_models
from cvtrain.spec import load_spec
from cvtrain.training import batch_parts


def job(name="basenet", *overrides):
    return load_spec(JOBS / "cifar" / f"{name}.yaml", list(overrides))


@pytest.mark.parametrize("name", sorted(list_models()))
def test_a_model_that_says_it_has_no_batch_statistics_has_no_batch_normalization(name):
    from cvtrain.training.parts_model import batch_statistics_layers

    opts = options(name)
    model = build_model(opts, opts.example_input_shape, 5)
    found = batch_statistics_layers(model)
    assert bool(found) == opts.batch_statistics(), (name, found)


def test_basenet_has_batch_statistics_only_with_batch_norm():
    assert not options("basenet").batch_statistics()
    assert options("basenet", batch_norm=True).batch_statistics()


@pytest.fixture
def decide(monkeypatch):
    """batch_parts.decide with the machine's cores and TensorFlow's threads per op set by
    the test."""
    import tensorflow as tf

    state = {"cores": 2, "threads": 1}
    monkeypatch.setattr(batch_parts, "cores", lambda: state["cores"])
    monkeypatch.setattr(tf.config.threading, "get_intra_op_parallelism_threads",
                        lambda: state["threads"])

    def run(spec, backend="tensorflow", gpus=False, cpu_devices=1, **machine):
        state.update(machine)
        return batch_parts.decide(spec, backend, gpus, cpu_devices)

    return run


@pytest.mark.parametrize("name", ["basenet", "normalize", "augment"])
def test_auto_splits_basenet_one_part_per_core(decide, name):
    assert decide(job(name)) == (2, "2 parts side by side, one thread per op")
    assert decide(job(name), cores=16)[0] == 8  # at least 4 images a part of 32
    parts, note = decide(job(name, "training.batch_size=6"), cores=16)
    assert parts == 1 and "batches of 6" in note


@pytest.mark.parametrize("spec_name,machine,why", [
    ("deeper", {}, "measured under 1.2x faster"),  # its cores are busier unsplit
    ("dropout", {}, "statistics over the batch"),  # BatchNormalization
    ("bonus", {}, "statistics over the batch"),
    ("basenet", {"cores": 1}, "1 core"),
    ("basenet", {"threads": 0}, "its default threads per op"),  # configure_threads not run
    ("basenet", {"threads": 2}, "2 threads per op"),
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
    assert decide(job("deeper", "training.batch_split=2"))[0] == 2  # asked for: split
    parts, note = decide(job("basenet", "training.batch_split=2"), threads=0)
    assert parts == 2 and "default threads per op" in note  # asked for: split all the same
    assert decide(job("dropout", "training.batch_split=1"))[0] == 1
    with pytest.raises(UsageError, match="BatchNormalization.*expected auto or 1"):
        decide(job("dropout", "training.batch_split=2"))
    with pytest.raises(UsageError, match="expected at most 32"):
        decide(job("basenet", "training.batch_split=33"))


def test_the_spec_refuses_a_value_that_is_not_auto_or_a_count():
    from cvtrain.spec.schema import SpecError

    with pytest.raises(SpecError, match="batch_split.*expected auto or an integer >= 1"):
        job("basenet", "training.batch_split=half")


THREADS_SCRIPT = """
import json, sys
from cvtrain.spec import load_spec
from cvtrain.training.batch_parts import configure_threads, cores
def job(name, *sets):
    return load_spec(f"jobs/cifar/{name}.yaml", list(sets))
seen = {"cores": cores()}
seen["none split"] = configure_threads([job("dropout"), job("basenet", "training.batch_split=1")])
seen["tensorflow imported"] = "tensorflow" in sys.modules
seen["one does not"] = configure_threads([job("basenet"), job("deeper")])
seen["all split"] = configure_threads([job("basenet"), job("augment"),
                                       job("deeper", "training.batch_split=2")])
import tensorflow as tf
seen["threads"] = tf.config.threading.get_intra_op_parallelism_threads()
print(json.dumps(seen))
"""


@pytest.mark.slow  # subprocesses that import TensorFlow
def test_threads_per_op_are_one_only_for_jobs_that_all_split():
    """In a process of its own (TensorFlow's threads are the process's, fixed once its
    runtime starts): a set with a job that does not split leaves them as TensorFlow sets
    them (and a set none of whose jobs splits does not import TensorFlow); one whose jobs
    all split sets one thread per op, where there are two cores or more."""
    done = subprocess.run([sys.executable, "-c", THREADS_SCRIPT], cwd=ROOT, text=True,
                          capture_output=True,
                          env={**os.environ, "KERAS_BACKEND": "tensorflow",
                               "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.splitlines()[-1])
    two = seen["cores"] >= 2
    assert seen["none split"] is False and seen["tensorflow imported"] is False
    assert seen["one does not"] is False
    assert seen["all split"] is two and (seen["threads"] == 1) is two


def _compiled(parts, seed=0):
    """BaseNet, compiled for SGD, each batch in ``parts`` parts."""
    import keras

    from cvtrain.training.parts_model import in_parts

    keras.utils.set_random_seed(seed)
    model = in_parts(build_model(options("basenet"), (32, 32, 3), 5), parts)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def _batch(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 32, 32, 3)).astype("float32")
    y = np.eye(5, dtype="float32")[rng.integers(0, 5, n)]
    return x, y


def _step_weights(parts, x, y):
    """The weights of BaseNet after one SGD step on (x, y), the batch in ``parts``."""
    model = _compiled(parts)
    logs = model.train_on_batch(x, y, return_dict=True)
    ev = model.evaluate(x, y, verbose=0, return_dict=True, batch_size=len(x))
    predicted = model.predict(x, verbose=0, batch_size=len(x))
    return [w.numpy() for w in model.weights], logs, ev, predicted


def _close(a, b):
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


# the quick tier keeps the uneven batch; 32 and 1 (one part empty) are in the full run
@pytest.mark.parametrize("batch", [pytest.param(32, marks=pytest.mark.slow), 18,
                                   pytest.param(1, marks=pytest.mark.slow)])
def test_a_split_step_is_the_whole_batch_step_to_float_rounding(batch, keras_globals):
    x, y = _batch(batch, batch)
    whole, logs1, ev1, p1 = _step_weights(1, x, y)
    parts, logs2, ev2, p2 = _step_weights(2, x, y)
    moved = sum(float(np.abs(w - w0).max()) for w, w0 in zip(whole, _initial(), strict=True))
    assert moved > 1e-4  # the step did something
    _close(whole, parts)
    for d1, d2 in ((logs1, logs2), (ev1, ev2)):
        assert d1.keys() == d2.keys()
        _close([d1[k] for k in d1], [d2[k] for k in d1])
    np.testing.assert_allclose(p1, p2, rtol=1e-5, atol=1e-6)


def _initial():
    import keras

    keras.utils.set_random_seed(0)
    return [w.numpy() for w in build_model(options("basenet"), (32, 32, 3), 5).weights]


def test_a_model_with_batch_normalization_is_never_split(keras_globals):
    from cvtrain.training.parts_model import in_parts

    model = build_model(options("basenet", batch_norm=True), (32, 32, 3), 5)
    with pytest.raises(RuntimeError, match="BatchNormalization"):
        in_parts(model, 2)
    assert in_parts(model, 1) is model


@pytest.mark.parametrize("saved_parts,resumed_parts", [
    (2, 1), pytest.param(2, 2, marks=pytest.mark.slow), pytest.param(1, 2, marks=pytest.mark.slow)])
def test_a_saved_model_trains_on_as_it_would_have_in_any_number_of_parts(
        saved_parts, resumed_parts, tmp_path, keras_globals):
    """A checkpoint (``model.save``, ``keras.models.load_model``) of a model in parts is
    one (loading needs only cvtrain's module imported), with the optimizer's state; resumed
    where the split is decided otherwise it trains on with that state, as the model that
    was not interrupted does, to float rounding."""
    import keras

    from cvtrain.training import parts_model

    x1, y1 = _batch(32, 1)
    x2, y2 = _batch(32, 2)
    model = _compiled(saved_parts)
    model.train_on_batch(x1, y1)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(loaded, parts_model.InParts) is (saved_parts > 1)
    resumed = parts_model.in_parts(loaded, resumed_parts)
    assert resumed.optimizer.iterations.numpy() == 1
    if resumed_parts > 1:
        assert isinstance(resumed, parts_model.InParts) and resumed.parts == resumed_parts
    model.train_on_batch(x2, y2)
    resumed.train_on_batch(x2, y2)
    _close([w.numpy() for w in model.weights], [w.numpy() for w in resumed.weights])
    _close([v.numpy() for v in model.optimizer.variables],
           [v.numpy() for v in resumed.optimizer.variables])


def test_the_network_in_parts_is_the_network(keras_globals):
    from cvtrain.training.parts_model import in_parts, whole

    network = build_model(options("basenet"), (32, 32, 3), 5)
    split = in_parts(network, 2)
    assert whole(split) is network and whole(network) is network
    assert [v.path for v in split.trainable_variables] == [
        v.path for v in network.trainable_variables]


@pytest.mark.slow
def test_a_run_splits_on_this_cpu_and_learns_what_the_whole_batch_does(tmp_path):
    """Through the CLI, in a process of its own as a user runs it: with 2 cores or more
    the batch is split (metrics.json says so); the curves match the unsplit run's to float
    rounding; model.keras is the network alone (no cvtrain class)."""
    archive = write_synthetic_cifar100(tmp_path / "data", classes=4, train_per_class=40,
                                       test_per_class=10, seed=3)
    results = {}
    for value in ("auto", "1"):
        done = run_cli("run", "basenet", "--set", f"data.path={archive}", "--set",
                       "data.num_classes=4", "--set", "training.epochs=2", "--set",
                       f"training.batch_split={value}", "--seed", "5", "--out", tmp_path,
                       "--run-id", f"split-{value}", env={"COLUMNS": "200"})
        assert done.returncode == 0, done.stderr[-3000:]
        folder = tmp_path / "basenet" / f"split-{value}"
        results[value] = json.loads((folder / "metrics.json").read_text())
        if value == "auto" and batch_parts.cores() >= 2:
            assert "each batch in 2 parts side by side" in done.stdout
        with zipfile.ZipFile(folder / "model.keras") as saved:
            assert "cvtrain" not in saved.read("config.json").decode()
    auto, whole = results["auto"], results["1"]
    assert whole["device"]["batch_split"] == 1
    assert auto["device"]["batch_split"] == (2 if batch_parts.cores() >= 2 else 1)
    for key in ("test_accuracy", "test_loss"):
        assert auto[key] == pytest.approx(whole[key], rel=1e-3, abs=1e-3), key


@pytest.mark.slow
def test_a_set_with_a_job_that_does_not_split_splits_none(tmp_path):
    """A set in one process: a job that is not split (BatchNormalization) leaves
    TensorFlow's threads per op as they are, so BaseNet beside it is not split either."""
    archive = write_synthetic_cifar100(tmp_path / "data", classes=4, train_per_class=20,
                                       test_per_class=5, seed=3)
    done = run_cli("run", "basenet", "dropout", "--set", f"data.path={archive}", "--set",
                   "data.num_classes=4", "--set", "training.epochs=1", "--seed", "5",
                   "--out", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    basenet = json.loads(next((tmp_path / "basenet").glob("*/metrics.json")).read_text())
    assert basenet["device"]["batch_split"] == 1
    assert "threads per op in this process" in basenet["device"]["batch_split_note"]
