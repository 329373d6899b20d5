"""A model that computes each batch in parts, side by side: ``training.batch_split`` as a
Keras model (when and why: :mod:`cvtrain.training.batch_parts`).

:class:`InParts` wraps the model that trains (the network, or the network behind the
dataset's layers): its ``call`` takes each part of the batch through that model and joins
the outputs. Everything else is Keras's own step on the joined batch (the loss over the
whole batch, the metrics, one gradient, summed by the tape over the parts, one optimizer
update), so the job is unchanged: batch 32, the same mean gradient, to float rounding.
Layers that compute over the batch (BatchNormalization in training) would see each part
alone instead, so models with them are never split.

It is what compiles and trains, so a checkpoint holds it (a cvtrain class, as the
augmentation layer is; importing this module registers it); the run folder's
``model.keras`` is the network alone. A run resumed where the split is decided otherwise
(another machine) trains on with the checkpoint's weights and optimizer:
:func:`in_parts` sets the parts of a loaded :class:`InParts` (1: the batch whole), or puts
a loaded whole model in parts with the same optimizer and compile settings.
"""

from __future__ import annotations

import itertools

import keras


@keras.saving.register_keras_serializable(package="cvtrain")
class InParts(keras.Model):
    """``model``, each batch taken through it in ``parts`` parts and joined (TensorFlow:
    the parts' ops are independent, so its inter-op threads run them side by side)."""

    def __init__(self, model, parts: int, **kwargs):
        kwargs.setdefault("name", f"parts_{model.name}")
        kwargs.setdefault("autocast", False)  # the model it wraps casts its own inputs
        super().__init__(**kwargs)
        self.whole = model
        self.parts = parts

    def build(self, input_shape=None):
        # the wrapped model is built (as made, or as loaded)
        self.built = True

    def call(self, inputs, training=None):
        if self.parts < 2:
            return self.whole(inputs, training=training)
        import tensorflow as tf

        n = tf.shape(inputs)[0]
        cuts = [n * i // self.parts for i in range(self.parts + 1)]
        return tf.concat([_part(self.whole, inputs, n, a, b, training)
                          for a, b in itertools.pairwise(cuts)], axis=0)

    def compute_output_spec(self, inputs, training=None):
        return self.whole.compute_output_spec(inputs)

    def get_config(self):
        return {"name": self.name, "parts": self.parts,
                "model": keras.saving.serialize_keras_object(self.whole)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(config.pop("model"),
                                                      custom_objects=custom_objects)
        return cls(model, **config)


def _part(model, inputs, n, a, b, training):
    """``model`` on rows a..b of the batch. A part with none (a batch of fewer images than
    parts, an epoch's last) takes a neighbour's row through and keeps none of its output,
    which adds nothing to the gradient: oneDNN's convolutions fail on an empty batch (a
    tf.cond between whole and split batches measured 20 % slower)."""
    import tensorflow as tf

    start = tf.minimum(a, n - 1)
    out = model(inputs[start:tf.maximum(b, start + 1)], training=training)
    return out[a - start:b - start]


def batch_statistics_layers(layer) -> list[str]:
    """The names of the BatchNormalization layers in ``layer``, nested models included."""
    found = []
    for sub in getattr(layer, "layers", []):
        if isinstance(sub, keras.layers.BatchNormalization):
            found.append(sub.name)
        found.extend(batch_statistics_layers(sub))
    return found


def whole(model):
    """The model that ``model`` computes in parts, or ``model`` itself."""
    return model.whole if isinstance(model, InParts) else model


def in_parts(model, parts: int):
    """``model`` (built; TensorFlow where ``parts`` > 1) computing each batch in ``parts``
    parts: the model to compile (one not yet compiled) and train. A loaded
    :class:`InParts` gets ``parts`` (1: whole batches); a compiled whole model in parts
    keeps its optimizer (its state) and compile settings."""
    if isinstance(model, InParts):
        if model.parts != parts:
            _check(model.whole, parts)
            model.parts = parts  # before its step is traced: the load traces none
        return model
    if parts < 2:
        return model
    _check(model, parts)
    split = InParts(model, parts)
    if model.compiled:  # a checkpoint of whole batches, resumed where they split
        config = keras.saving.deserialize_keras_object(model.get_compile_config())
        split.compile(**{**config, "optimizer": model.optimizer})
    return split


def _check(model, parts: int) -> None:
    found = batch_statistics_layers(model) if parts > 1 else []
    if found:  # the options said otherwise: a builder that does not match its options
        raise RuntimeError(f"batch_split {parts}: {model.name} has BatchNormalization "
                           f"({', '.join(found[:3])}), which a split would change")
