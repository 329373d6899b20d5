"""Caltech-UCSD Birds as a registered dataset: its ``data:`` options and how a job trains
on it.

Two kinds of model input come from the same files: ``images`` decoded from disk as
batches are needed (fine-tuning a whole network), and ``backbone_features``, computed once
by the frozen backbone the model names and cached (:mod:`cvtrain.data.birds.features`),
for heads trained on them.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from cvtrain.data.registry import Dataset, DatasetOptions, RawImages, register_dataset


class BirdsOptions(DatasetOptions):
    """Caltech-UCSD Birds: a folder or .tgz in the 2010 or the 2011 layout."""

    dataset: Literal["cub200"] = Field(description="dataset name")
    path: str | None = Field(
        None, description="folder or .tgz (or its s3:// URI) holding images/ and lists/ (2010) "
        "or images.txt, train_test_split.txt, image_class_labels.txt (2011)")
    layout: Literal["2010", "2011"] = Field("2010", description="which edition's file layout")
    image_size: int = Field(224, ge=32, le=1024, description="images are resized to this square")
    validation_split: float = Field(
        0.1, gt=0, lt=1, description="fraction of the training set held out for validation")

    @field_validator("layout", mode="before")
    @classmethod
    def _year_as_text(cls, value):
        return str(value) if isinstance(value, int) else value  # `layout: 2010` in YAML


@register_dataset
class Cub200(Dataset):
    """CUB-200 (2010) or CUB-200-2011, classes named by their image folders."""

    options: ClassVar = BirdsOptions
    provides: ClassVar = ("images", "backbone_features")

    def input_shape(self, opts, kind, model):
        if kind == "backbone_features":
            return model.feature_shape(opts.image_size)
        return (opts.image_size, opts.image_size, 3)

    def load(self, opts, path, *, progress):
        from cvtrain.data.birds import load_cub200

        return load_cub200(path, layout=opts.layout)

    def streams(self, spec, data, kind, seed, log, initial_epoch, initial_step=0):
        if kind == "backbone_features":
            return feature_streams(spec, data, seed, log, initial_epoch, initial_step)
        return image_streams(spec, data, seed, initial_epoch, initial_step)

    def raw_images(self, spec, splits, model, seed):
        """Images of any size, resized and preprocessed as :func:`load_image` does; for a
        head on backbone features, the backbone (and its pooling) too."""
        from cvtrain.data.birds.images import IMAGENET_BGR_MEAN, raw_image_layers

        size = spec.data.image_size
        layers = raw_image_layers(size)
        words = (f"bilinear resize to {size}x{size}, then ResNet50's preprocess_input (RGB to "
                 f"BGR, minus the ImageNet BGR means {list(IMAGENET_BGR_MEAN)})")
        if "features" in splits.details:
            from cvtrain.data.birds.features import feature_layers

            opts = spec.model
            layers += feature_layers(opts, size, seed)
            words += (f", then the frozen {opts.backbone} backbone (weights: {opts.weights})"
                      + (" and its global average pooling" if opts.features == "pooled" else ""))
        return RawImages(shape=(None, None, 3), layers=layers,
                         description={"resize": [size, size], "preprocessing": words})

    def errors(self, data):
        from cvtrain.data.birds import image_errors

        return image_errors(data.train_files + data.test_files)


def feature_streams(spec, birds, seed: int, log, initial_epoch: int, initial_step: int = 0):
    """Cached backbone features (pooled vectors or maps) as in-memory streams."""
    from cvtrain.data.birds import split_indices
    from cvtrain.data.birds.features import load_or_extract
    from cvtrain.data.pipeline import Splits, eval_stream, resumed, train_stream

    t, d = spec.training, spec.data
    fs = load_or_extract(birds, spec.model, d.image_size, d.layout, seed, log)
    train, test = fs.train, fs.test
    tr, val = split_indices(len(train), d.validation_split)
    classes = birds.num_classes
    labels = birds.train_labels
    partial, stream = resumed(
        lambda first, end, step: train_stream(train[tr], labels[tr], classes, t.batch_size,
                                              end, seed, first, first_step=step),
        t.epochs, initial_epoch, initial_step)
    return Splits(
        train=stream, partial=partial,
        validation=eval_stream(train[val], labels[val], classes, t.batch_size),
        test=eval_stream(test, birds.test_labels, classes, t.batch_size),
        steps_per_epoch=math.ceil(len(tr) / t.batch_size), train_size=len(tr),
        validation_size=len(val), test_size=len(test), input_shape=tuple(train.shape[1:]),
        details={"features": {"kind": spec.model.features, "key": fs.key,
                              "cache": "hit" if fs.cache_hit else "miss",
                              **({"shared": fs.shared} if fs.shared else {}),
                              "extraction_seconds": round(fs.seconds, 3),
                              "path": str(fs.path)}})


def image_streams(spec, birds, seed: int, initial_epoch: int, initial_step: int = 0):
    """Images decoded from disk as batches are needed (fine-tuning)."""
    from cvtrain.data.birds import image_stream, split_indices, training_image_stream
    from cvtrain.data.pipeline import Splits, resumed

    t, d = spec.training, spec.data
    tr, val = split_indices(len(birds.train_files), d.validation_split)
    files = birds.train_files
    classes = birds.num_classes
    partial, stream = resumed(
        lambda first, end, step: training_image_stream(
            [files[i] for i in tr], birds.train_labels[tr], classes, d.image_size,
            t.batch_size, end, seed, first, step),
        t.epochs, initial_epoch, initial_step)
    return Splits(
        train=stream, partial=partial,
        validation=image_stream([files[i] for i in val], birds.train_labels[val], d.image_size,
                                t.batch_size, classes),
        test=image_stream(birds.test_files, birds.test_labels, d.image_size, t.batch_size,
                          classes),
        steps_per_epoch=math.ceil(len(tr) / t.batch_size), train_size=len(tr),
        validation_size=len(val), test_size=len(birds.test_files),
        input_shape=(d.image_size, d.image_size, 3))
