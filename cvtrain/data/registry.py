"""The dataset registry: a name -> dataset map, the twin of :mod:`cvtrain.models.registry`.

A dataset is one module that declares a pydantic options class (its ``data:`` section of
a job file, whose ``dataset`` field is a one-value Literal) and a :class:`Dataset`
subclass decorated with ``@register_dataset``. The class says, in one place, everything
the rest of cvtrain needs to know about the dataset:

- ``options``: the schema of its ``data:`` section; the job schema's ``data`` key is the
  discriminated union of every registered options class;
- ``provides``: the kinds of model input it can produce (``tiny_images``, ``images``,
  ``backbone_features``); a model fits a dataset when it accepts one of them, so an
  incompatible pair is refused by ``cvtrain jobs validate``;
- ``input_shape``: the shape a model will see, known from the spec alone, so a model can
  refuse an input it cannot take before any data is read;
- ``load``: reading the data (a download, a local archive or folder) into memory or file
  lists; ``streams``: turning it into the train/validation/test streams ``fit`` consumes;
- ``raw_images``: how images come as they are (uint8 RGB files) and the layers that
  prepare them as the streams did, for the run's raw-image model (``classifier.keras``,
  :mod:`cvtrain.training.raw_image_model`).

Local paths among its options are named by ``DatasetOptions.path_fields``; the docker
runner mounts them and the Batch runner refuses them (see :func:`cvtrain.spec.local_paths`).
Importing a dataset module must not import TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

from cvtrain.registry import Registry

if TYPE_CHECKING:
    from cvtrain.console import RunLog
    from cvtrain.data.pipeline import Splits
    from cvtrain.spec import JobSpec

# Modules whose import registers a dataset (see cvtrain.registry for why they are listed).
MODULES = ("cvtrain.data.cifar.dataset", "cvtrain.data.birds.dataset")


@dataclass
class LoadedData:
    """What every dataset's ``load`` returns at least: class names in label order, where
    the data came from, the sha256 that identifies its content, and whether it is
    synthetic (:data:`cvtrain.data.synthetic.MARKER`)."""

    class_names: list[str]
    source: Path
    sha256: str
    #: made by cvtrain's synthetic writers (their marker was found): not the real dataset
    synthetic: bool = field(default=False, kw_only=True)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class RawImages:
    """How a dataset's images come as they are, and what prepares them for its models.

    ``shape`` is one image's (height, width, channels) with ``None`` for a side the model
    takes at any size (resized inside); ``layers`` are Keras layers applied in order to
    the uint8 images (scaling, resizing, normalisation: never augmentation), each in
    float32 and built in; ``description`` says the same in words for ``classifier.json``.
    """

    shape: tuple[int | None, ...]
    layers: list[Any]
    description: dict


class DatasetOptions(BaseModel):
    """Base of every dataset's ``data:`` options: unknown keys are refused. Subclasses
    declare all their fields (``dataset`` first), so a resolved spec lists them in the
    order the dataset's author chose."""

    model_config = ConfigDict(extra="forbid")

    #: option fields that may hold a local file or folder (a URI is not local)
    path_fields: ClassVar[tuple[str, ...]] = ("path",)
    #: values of those fields that are words, not paths
    path_keywords: ClassVar[frozenset[str]] = frozenset()


class Dataset:
    """One registered dataset; subclasses set the class attributes and the methods."""

    name: ClassVar[str]
    options: ClassVar[type[DatasetOptions]]
    provides: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""

    def input_shape(self, opts: DatasetOptions, kind: str, model: Any) -> tuple[int, ...]:
        """The shape of one model input of ``kind`` for these options and this model."""
        raise NotImplementedError

    def load(self, opts: DatasetOptions, path: Any, *, progress: bool) -> Any:
        """Read the data (``path`` is ``opts.path`` made local) into a :class:`LoadedData`
        subclass: arrays in memory, or file lists."""
        raise NotImplementedError

    def streams(self, spec: JobSpec, data: Any, kind: str, seed: int, log: RunLog,
                initial_epoch: int, initial_step: int = 0) -> Splits:
        """The train/validation/test streams of ``data`` for model input ``kind``, training
        from epoch ``initial_epoch`` (0-based) on, that epoch from its step
        ``initial_step`` (see :func:`cvtrain.data.pipeline.resumed`)."""
        raise NotImplementedError

    def raw_images(self, spec: JobSpec, splits: Splits, model: Any,
                   seed: int) -> RawImages | None:
        """The raw images of this dataset and the layers that prepare them as ``streams``
        did (``model`` is what trained, dataset layers included; ``seed`` the run's); None:
        its runs have no raw-image model."""
        return None

    def errors(self, data: Any):
        """A context manager around training that names the file behind a read failure;
        by default none."""
        import contextlib

        return contextlib.nullcontext()


_DATASETS: Registry[Dataset] = Registry("dataset", MODULES)


def training_streams(dataset: Dataset, spec: JobSpec, data: Any, kind: str, seed: int,
                     log: RunLog, initial_epoch: int, initial_step: int) -> Splits:
    """``dataset.streams``; one written before checkpoints within an epoch existed (its
    ``streams`` takes no ``initial_step``) still trains, with checkpoints at epoch ends
    only (``Splits.within_epoch`` False)."""
    import inspect

    if "initial_step" in inspect.signature(dataset.streams).parameters:
        return dataset.streams(spec, data, kind, seed, log, initial_epoch, initial_step)
    if initial_step:
        from cvtrain.errors import DataError

        raise DataError(f"dataset {spec.data.dataset}: this run's checkpoint is within an "
                        "epoch, and the dataset cannot resume there (its streams() takes no "
                        "initial_step)")
    splits = dataset.streams(spec, data, kind, seed, log, initial_epoch)
    splits.within_epoch = False
    return splits


def register_dataset(cls: type[Dataset]) -> type[Dataset]:
    """Class decorator: register ``cls`` under the name its options' ``dataset`` Literal
    fixes."""
    cls.name = cls.options.model_fields["dataset"].annotation.__args__[0]
    _DATASETS.add(cls.name, cls())
    return cls


def list_datasets() -> dict[str, Dataset]:
    return _DATASETS.all()


def dataset_option_classes() -> dict[str, type[DatasetOptions]]:
    return {name: entry.options for name, entry in list_datasets().items()}


def get_dataset(name: str) -> Dataset:
    return _DATASETS.get(name)
