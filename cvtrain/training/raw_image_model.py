"""The run's raw-image model: ``classifier.keras`` and ``classifier.json``.

``model.keras`` is the network as it trained: it takes what the dataset's streams made of
the images (scaled and normalised pixels, or a frozen backbone's features). The
classifier takes images as they come, uint8 RGB, and returns class probabilities: the
dataset's preparation (:meth:`cvtrain.data.registry.Dataset.raw_images`: scaling, the
run's normalisation statistics, resizing, ResNet50's ``preprocess_input``, the backbone
of a head trained on features) is inside it, augmentation is not. Every layer is a Keras
built-in in float32, even when training used mixed precision, so it loads with plain
``keras.saving.load_model`` (safe mode, no custom objects, no cvtrain) on the backend it
was trained with and, where Keras allows, on the others.

``classifier.json`` beside it names the class names' file (``classes.json``, in the
order of the outputs) and says what input the model expects, in words and numbers.
"""

from __future__ import annotations

import contextlib

from cvtrain import manifest, runs

#: what ``classifier.json`` says of the model's output
OUTPUT = "class probabilities (softmax), in the order of classes.json"


@contextlib.contextmanager
def float32_policy():
    """Keras's global dtype policy float32 for the block (layers made in it compute and
    keep their variables in float32), the run's own policy back afterwards."""
    import keras

    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def _policies(model) -> set[str]:
    names = set()
    for layer in model.layers:
        names.add(layer.dtype_policy.name)
        if hasattr(layer, "layers"):
            names |= _policies(layer)
    return names


def float32_copy(model):
    """``model`` itself when every layer computes in float32, else a copy whose layers all
    do (mixed precision's layers rebuilt with a float32 policy), with the same weights."""
    import keras

    if _policies(model) <= {"float32"}:
        return model

    def clone(layer):
        if isinstance(layer, keras.Model):
            return float32_copy(layer)
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    with float32_policy():
        copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def build(dataset, spec, splits, network, model, seed: int):
    """(classifier, the dataset's description of its input), or None when the dataset
    has no raw images."""
    import keras

    with float32_policy():
        raw = dataset.raw_images(spec, splits, model, seed)
        if raw is None:
            return None
        inputs = keras.Input(raw.shape, dtype="uint8", name="images")
        x = inputs
        for layer in raw.layers:
            x = layer(x)
        outputs = float32_copy(network)(x)
        classifier = keras.Model(inputs, outputs, name="classifier")
    return classifier, raw.description


def save(dataset, spec, splits, network, model, run: runs.RunFolder, seed: int, backend: str,
         precision: str, log) -> bool:
    """Write ``classifier.keras`` and ``classifier.json`` into the run folder; False (and
    a line saying so, also in ``log.txt``) when the dataset has no raw images or what the
    classifier needs cannot be had now (a feature head's ImageNet weights, offline, when
    the features came from the cache): the trained run is kept all the same."""
    import keras

    from cvtrain.errors import DataError

    try:
        built = build(dataset, spec, splits, network, model, seed)
    except DataError as exc:
        log.print(f"[yellow]classifier[/]: not saved, only model.keras: {exc}")
        return False
    if built is None:
        log.print(f"[yellow]classifier[/]: dataset {spec.data.dataset} gives no raw-image "
                  "model; only model.keras is saved")
        return False
    classifier, description = built
    classifier.save(run.file(runs.CLASSIFIER))
    classes = network.output_shape[-1]
    shape = list(classifier.input_shape)
    manifest.write_json(run.file(runs.CLASSIFIER_INFO), {
        "model": runs.CLASSIFIER,
        "classes": runs.CLASSES,
        "num_classes": classes,
        "input": {"dtype": "uint8", "shape": shape, "channels": "RGB", "values": "0-255",
                  "layout": "batch, height, width, channels", **description},
        "output": OUTPUT,
        "dtype_policy": "/".join(sorted(_policies(classifier))),  # float32, by construction
        "trained_with": {"backend": backend, "keras": keras.__version__,
                         "precision_policy": precision},
        "job": spec.name,
        "run_id": run.run_id,
    })
    size = ("any size (resized inside)" if shape[1] is None
            else f"{shape[1]}x{shape[2]}")
    log.print(f"[bold]classifier[/]: {runs.CLASSIFIER} takes uint8 RGB images of {size} and "
              f"returns the probabilities of {classes} classes ({runs.CLASSES})")
    return True
