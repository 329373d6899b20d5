"""ResNet50 transfer learning (Part 3): heads over frozen features, and fine-tuning.

Feature heads (``FeatureHeadOptions``) are trained on features the frozen backbone
computed once (see :mod:`cvtrain.features`); their builders take the feature shape as
input shape. ``resnet50_finetune`` is a whole image model whose every layer trains.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from cvtrain.models.registry import ModelOptions, register_model

WEIGHTS_HELP = ("imagenet (Keras downloads them), none (random init, for tests), or the "
                "path or URI of a no-top ResNet50 weights file")


class ResNetOptions(ModelOptions):
    backbone: Literal["resnet50"] = "resnet50"
    weights: str = Field("imagenet", min_length=1, description=WEIGHTS_HELP)


class FeatureHeadOptions(ResNetOptions):
    """A head trained on frozen backbone features; ``features`` says which."""

    features: ClassVar[str]  # "pooled": global-average-pooled vectors; "maps": spatial maps


class DenseHeadOptions(FeatureHeadOptions):
    name: Literal["resnet50_features_dense"]
    features: ClassVar[str] = "pooled"
    example_input_shape: ClassVar[tuple[int, ...]] = (2048,)


class MLPHeadOptions(FeatureHeadOptions):
    name: Literal["resnet50_features_mlp"]
    features: ClassVar[str] = "pooled"
    example_input_shape: ClassVar[tuple[int, ...]] = (2048,)
    units: list[int] = Field([1024, 512], min_length=1, description="hidden Dense relu widths")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout before the classifier")


class ConvHeadOptions(FeatureHeadOptions):
    name: Literal["resnet50_maps_convhead"]
    features: ClassVar[str] = "maps"
    example_input_shape: ClassVar[tuple[int, ...]] = (7, 7, 2048)
    filters: int = Field(1024, ge=1, description="the 3x3 convolution's filters")
    padding: Literal["valid", "same"] = Field("valid", description="the convolution's padding")
    dense_units: list[int] = Field([512, 218], description="Dense relu + BatchNorm blocks")
    dropout: list[float] = Field([0.25, 0.25, 0.5], description="after Flatten, then after "
                                 "each dense block")


class FineTuneOptions(ResNetOptions):
    name: Literal["resnet50_finetune"]
    example_input_shape: ClassVar[tuple[int, ...]] = (64, 64, 3)
    dense_units: int = Field(1024, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)


def _classifier(layers, x, num_classes):
    return layers.Dense(num_classes, activation="softmax", dtype="float32",
                        name="predictions")(x)


@register_model(DenseHeadOptions)
def build_dense_head(opts: DenseHeadOptions, input_shape, num_classes):
    """A1: pooled 2048-vector -> Dense softmax."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    return keras.Model(inputs, _classifier(layers, inputs, num_classes), name=opts.name)


@register_model(MLPHeadOptions)
def build_mlp_head(opts: MLPHeadOptions, input_shape, num_classes):
    """A2: pooled 2048-vector -> Dense 1024 relu -> Dense 512 relu -> Dropout -> softmax."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = inputs
    for units in opts.units:
        x = layers.Dense(units, activation="relu")(x)
    x = layers.Dropout(opts.dropout)(x)
    return keras.Model(inputs, _classifier(layers, x, num_classes), name=opts.name)


@register_model(ConvHeadOptions)
def build_conv_head(opts: ConvHeadOptions, input_shape, num_classes):
    """B: 7x7x2048 maps -> Conv 1024 3x3, BN, ReLU, MaxPool, Flatten, dense blocks."""
    import keras
    from keras import layers

    if len(opts.dropout) != len(opts.dense_units) + 1:
        raise ValueError("model.dropout needs one rate after Flatten and one per dense block")
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(opts.filters, 3, padding=opts.padding)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(opts.dropout[0])(x)
    for units, rate in zip(opts.dense_units, opts.dropout[1:], strict=True):
        x = layers.Dense(units, activation="relu")(x)
        x = layers.BatchNormalization()(x)
        x = layers.Dropout(rate)(x)
    return keras.Model(inputs, _classifier(layers, x, num_classes), name=opts.name)


def build_backbone(opts: ResNetOptions, image_size: int, pooling: str | None):
    """ResNet50 without its top, with the weights the options name."""
    import keras

    from cvtrain.weights import resolve_weights

    return keras.applications.ResNet50(include_top=False, weights=resolve_weights(opts.weights),
                                       input_shape=(image_size, image_size, 3), pooling=pooling)


@register_model(FineTuneOptions)
def build_finetune(opts: FineTuneOptions, input_shape, num_classes):
    """Fine-tuning: ResNet50 (pooled) -> Dense 1024 relu -> Dropout 0.5 -> softmax, all
    layers trainable."""
    import keras
    from keras import layers

    backbone = build_backbone(opts, input_shape[0], pooling="avg")
    backbone.trainable = True
    x = layers.Dense(opts.dense_units, activation="relu")(backbone.output)
    x = layers.Dropout(opts.dropout)(x)
    return keras.Model(backbone.input, _classifier(layers, x, num_classes), name=opts.name)
