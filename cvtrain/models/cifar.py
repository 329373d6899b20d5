"""The coursework's CIFAR models: BaseNet and its improvement steps, and the bonus model.

One builder, ``basenet``, covers Part 1 and every Part 2 step: ``deep`` swaps each 5x5
convolution for two 3x3 ones and adds a last convolution, ``batch_norm`` puts a
BatchNormalization between every convolution (and the hidden dense layer) and its ReLU,
``dropout`` follows each convolution block. With all three on it is the report's final
improved model, layer for layer.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from cvtrain.models.registry import ModelOptions, register_model


class BaseNetOptions(ModelOptions):
    accepts: ClassVar[tuple[str, ...]] = ("tiny_images",)

    name: Literal["basenet"]
    deep: bool = Field(False, description="two 3x3 convolutions per 5x5 one, plus a last one")
    batch_norm: bool = Field(False, description="BatchNormalization before each ReLU")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after each convolution block")
    dense_units: int = Field(50, ge=1, description="width of the hidden dense layer")

    def batch_statistics(self) -> bool:
        return self.batch_norm

    def splits_by_default(self) -> bool:
        # convolutions of 6 and 16 filters leave a second core idle at batch 32: in two
        # parts, 1.26-1.50x (basenet, normalize, augment); deep's 32-128 filters keep both
        # busier, 1.13x (benchmarks/README.md)
        return not self.deep and not self.batch_norm


class BonusOptions(ModelOptions):
    accepts: ClassVar[tuple[str, ...]] = ("tiny_images",)

    name: Literal["bonus"]
    filters: list[int] = Field([32, 64, 128, 256], min_length=1,
                               description="filters of each conv-conv-BN-ReLU-Dropout block")
    pooled_blocks: int = Field(3, ge=0, description="how many first blocks end in max pooling")
    dropout: float = Field(0.25, ge=0, lt=1, description="dropout closing each conv block")
    dense_units: list[int] = Field([256, 128, 64], description="Dense-BN-ReLU-Dropout blocks")
    dense_dropout: float = Field(0.3, ge=0, lt=1)

    def check(self, input_shape):
        if self.pooled_blocks > len(self.filters):
            return [("pooled_blocks", f"expected at most {len(self.filters)} (one per block of "
                     f"model.filters), got {self.pooled_blocks}")]
        side = min(input_shape[:2])
        if side >> self.pooled_blocks < 1:
            return [("pooled_blocks", f"{self.pooled_blocks} max poolings shrink a {side}-pixel "
                     "input to nothing; expected fewer")]
        return []


def _head(layers, x, num_classes):
    # float32 output keeps softmax and the loss stable under mixed precision
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)


@register_model(BaseNetOptions)
def build_basenet(opts: BaseNetOptions, input_shape, num_classes):
    """BaseNet (Part 1) and its Part 2 improvements, chosen by options."""
    import keras
    from keras import layers

    def conv(x, filters, kernel, padding):
        x = layers.Conv2D(filters, kernel, padding=padding,
                          activation=None if opts.batch_norm else "relu")(x)
        if opts.batch_norm:
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        return x

    def end_block(x, pool=True):
        if pool:
            x = layers.MaxPooling2D(2)(x)
        if opts.dropout:
            x = layers.Dropout(opts.dropout)(x)
        return x

    inputs = keras.Input(input_shape)
    x = inputs
    if opts.deep:
        for filters in (32, 64):
            x = conv(x, filters, 3, "same")
            x = conv(x, filters, 3, "valid")
            x = end_block(x)
        x = conv(x, 128, 3, "same")
        x = end_block(x, pool=False)
    else:
        for filters in (6, 16):
            x = conv(x, filters, 5, "valid")
            x = end_block(x)
    x = layers.Flatten()(x)
    if opts.batch_norm:
        x = layers.Dense(opts.dense_units)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    else:
        x = layers.Dense(opts.dense_units, activation="relu")(x)
    return keras.Model(inputs, _head(layers, x, num_classes), name="basenet")


@register_model(BonusOptions)
def build_bonus(opts: BonusOptions, input_shape, num_classes):
    """The report's bonus: deeper conv blocks, global average pooling, three dense blocks."""
    import keras
    from keras import layers

    inputs = keras.Input(input_shape)
    x = inputs
    for i, filters in enumerate(opts.filters):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(filters, 3, padding="same")(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Dropout(opts.dropout)(x)
        if i < opts.pooled_blocks:
            x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalAveragePooling2D()(x)
    for units in opts.dense_units:
        x = layers.Dense(units)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Dropout(opts.dense_dropout)(x)
    return keras.Model(inputs, _head(layers, x, num_classes), name="bonus")
