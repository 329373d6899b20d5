"""ResNet50 transfer learning (Part 3): heads over frozen features, and fine-tuning.

Feature heads (``FeatureHeadOptions``) are trained on features the frozen backbone
computed once (see :mod:`cvtrain.features`); their builders take the feature shape as
input shape. ``resnet50_finetune`` is a whole image model whose every layer trains.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from cvtrain.models.registry import ModelOptions, register_model

WEIGHTS_HELP = ("imagenet (Keras downloads them), none (random init, for tests), or the "
                "path or URI of a no-top ResNet50 weights file")


#: ResNet50's last feature maps: channels, and how much smaller than the image they are
BACKBONE_CHANNELS = 2048
BACKBONE_STRIDE = 32


class ResNetOptions(ModelOptions):
    path_fields: ClassVar[tuple[str, ...]] = ("weights",)
    path_keywords: ClassVar[frozenset[str]] = frozenset({"imagenet", "none"})

    backbone: Literal["resnet50"] = "resnet50"
    weights: str = Field("imagenet", min_length=1, description=WEIGHTS_HELP)


class FeatureHeadOptions(ResNetOptions):
    """A head trained on frozen backbone features; ``features`` says which."""

    accepts: ClassVar[tuple[str, ...]] = ("backbone_features",)
    features: ClassVar[str]  # "pooled": global-average-pooled vectors; "maps": spatial maps

    def feature_shape(self, image_size: int) -> tuple[int, ...]:
        """The shape of one image's features: each stride-2 stage of ResNet50 rounds up
        (SAME-style padding), so the maps are ceil(size / 32) on a side."""
        if self.features == "pooled":
            return (BACKBONE_CHANNELS,)
        side = -(-image_size // BACKBONE_STRIDE)
        return (side, side, BACKBONE_CHANNELS)


class DenseHeadOptions(FeatureHeadOptions):
    name: Literal["resnet50_features_dense"]
    features: ClassVar[str] = "pooled"
    example_input_shape: ClassVar[tuple[int, ...]] = (2048,)

    def batch_statistics(self) -> bool:
        return False


class MLPHeadOptions(FeatureHeadOptions):
    name: Literal["resnet50_features_mlp"]
    features: ClassVar[str] = "pooled"
    example_input_shape: ClassVar[tuple[int, ...]] = (2048,)
    units: list[int] = Field([1024, 512], min_length=1, description="hidden Dense relu widths")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout before the classifier")

    def batch_statistics(self) -> bool:
        return False


class ConvHeadOptions(FeatureHeadOptions):
    name: Literal["resnet50_maps_convhead"]
    features: ClassVar[str] = "maps"
    example_input_shape: ClassVar[tuple[int, ...]] = (7, 7, 2048)
    filters: int = Field(1024, ge=1, description="the 3x3 convolution's filters")
    padding: Literal["valid", "same"] = Field("valid", description="the convolution's padding")
    dense_units: list[int] = Field([512, 218], description="Dense relu + BatchNorm blocks")
    dropout: list[float] = Field([0.25, 0.25, 0.5], description="after Flatten, then after "
                                 "each dense block")

    @field_validator("dropout")
    @classmethod
    def _rates(cls, rates: list[float]) -> list[float]:
        if any(not 0 <= r < 1 for r in rates):
            raise ValueError("expected rates in [0, 1)")
        return rates

    def check(self, input_shape):
        if len(self.dropout) != len(self.dense_units) + 1:
            return [("dropout", f"expected {len(self.dense_units) + 1} rates (one after Flatten "
                     f"and one per model.dense_units entry), got {len(self.dropout)}")]
        side = min(input_shape[:2])
        # a 3x3 convolution then a 2x2 max pooling must leave at least one position
        need = 4 if self.padding == "valid" else 2
        if side < need:
            return [("padding", f"the backbone's {side}x{side} maps are too small for a 3x3 "
                     f"{self.padding} convolution and 2x2 pooling; expected maps of at least "
                     f"{need}x{need} (data.image_size >= {(need - 1) * BACKBONE_STRIDE + 1})"
                     + (" or model.padding: same" if self.padding == "valid" else ""))]
        return []


class FineTuneOptions(ResNetOptions):
    accepts: ClassVar[tuple[str, ...]] = ("images",)

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

    from cvtrain.models.weights import resolve_weights

    weights = resolve_weights(opts.weights)
    try:
        return keras.applications.ResNet50(include_top=False, weights=weights,
                                           input_shape=(image_size, image_size, 3),
                                           pooling=pooling)
    except Exception as exc:  # Keras fails a download with a bare Exception
        if weights == "imagenet":
            from cvtrain.models.weights import imagenet_failure

            failure = imagenet_failure(exc)
            if failure is not None:
                raise failure from None
        if weights in (None, "imagenet") or not isinstance(exc, OSError | ValueError):
            raise
        from cvtrain.errors import DataError

        reason = " ".join(str(exc).split())[:200]
        raise DataError(f"model.weights: {opts.weights}: not the weights of a no-top ResNet50 "
                        f"({type(exc).__name__}: {reason})") from None


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
