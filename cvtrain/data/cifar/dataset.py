"""CIFAR-100 as a registered dataset: its ``data:`` options and how a job trains on it.

The 32x32 images fit in memory, so they become in-memory ``tf.data`` streams with the
job's normalisation and augmentation (:mod:`cvtrain.data.pipeline`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from cvtrain.data.registry import Dataset, DatasetOptions, RawImages, register_dataset


class Augment(BaseModel):
    """Random transforms applied to training batches only (never validation or test)."""

    model_config = ConfigDict(extra="forbid")

    shift: float = Field(0.0, ge=0, lt=1, description="max width/height shift, fraction of size")
    zoom: float = Field(0.0, ge=0, lt=1, description="max zoom in or out, fraction (0.1: 0.9-1.1)")
    horizontal_flip: bool = Field(False, description="flip left-right with probability 0.5")
    rotation: float = Field(0.0, ge=0, le=180, description="max rotation, degrees")
    shear: float = Field(0.0, ge=0, lt=90, description="max shear angle, degrees")
    fill_mode: Literal["nearest", "reflect", "wrap", "constant"] = Field(
        "nearest", description="how pixels outside the source image are filled"
    )

    @property
    def enabled(self) -> bool:
        return bool(self.shift or self.zoom or self.horizontal_flip or self.rotation or self.shear)


class CifarOptions(DatasetOptions):
    """CIFAR-100: where it is, which classes, and how it is split and prepared."""

    dataset: Literal["cifar100"] = Field(description="dataset name")
    path: str | None = Field(
        None,
        description="local archive or folder, or an s3:// URI; default: the user cache, "
        "downloading the official archive when missing",
    )
    edition: Literal["auto", "binary", "python"] = Field(
        "auto", description="CIFAR-100 archive edition; auto picks whichever is present"
    )
    num_classes: int = Field(25, ge=2, le=100, description="keep fine labels 0..num_classes-1")
    validation_split: float = Field(
        0.1, gt=0, lt=1, description="fraction of the training set held out for validation"
    )
    normalize: bool = Field(
        False, description="feature-wise centring and scaling, statistics from the training split"
    )
    augment: Augment = Field(default_factory=Augment)


@register_dataset
class Cifar100(Dataset):
    """CIFAR-100's fine classes 0..num_classes-1, both official editions."""

    options: ClassVar = CifarOptions
    provides: ClassVar = ("tiny_images",)

    def input_shape(self, opts, kind, model):
        return (32, 32, 3)

    def load(self, opts, path, *, progress):
        from cvtrain.data.cifar import load_cifar100

        return load_cifar100(path, num_classes=opts.num_classes, edition=opts.edition,
                             progress=progress)

    def streams(self, spec, data, kind, seed, log, initial_epoch, initial_step=0):
        from cvtrain.data.pipeline import build_splits

        d, t = spec.data, spec.training
        return build_splits(data, d.num_classes, d.validation_split, d.normalize, d.augment,
                            t.batch_size, t.epochs, seed, initial_epoch, initial_step)

    def raw_images(self, spec, splits, model, seed):
        from cvtrain.data.pipeline import normalization

        stats = splits.details.get("normalization") if spec.data.normalize else None
        words = ("x / 255, then minus the training split's per-channel mean and over its std "
                 "(normalization)" if stats else "x / 255")
        return RawImages(shape=tuple(splits.input_shape), layers=[normalization(model)],
                         description={"resize": None, "preprocessing": words,
                                      "normalization": stats})
