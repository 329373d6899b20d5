"""The model registry: a name -> (options schema, builder) map, in the style of timm.

A family module declares a pydantic options class whose ``name`` field is a one-value
Literal, and decorates its builder with ``@register_model(Options)``. The job schema's
``model`` key is the discriminated union of every registered options class, so an unknown
name or option is refused at validation time, before TensorFlow is ever imported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from cvtrain.registry import Registry

# Modules whose import registers builders (see cvtrain.registry for why they are listed).
FAMILIES = ("cvtrain.models.cifar", "cvtrain.models.resnet")


class ModelOptions(BaseModel):
    """Base of every model's options: unknown keys are refused.

    ``accepts`` names the kinds of input the model trains on, in order of preference; a
    dataset provides some kinds (:mod:`cvtrain.data.registry`), and the model fits the
    dataset when they share one. :meth:`check` refuses an input shape the model cannot
    take, or options that contradict each other, before anything is built.
    """

    model_config = ConfigDict(extra="forbid")

    #: kinds of input: tiny_images (32x32 RGB), images (any square RGB size),
    #: backbone_features (a frozen backbone's outputs, computed once)
    accepts: ClassVar[tuple[str, ...]] = ("tiny_images",)
    #: a small valid input shape, for tests that build every registered model
    example_input_shape: ClassVar[tuple[int, ...]] = (32, 32, 3)
    #: option fields that may hold a local file (a URI or a keyword is not local)
    path_fields: ClassVar[tuple[str, ...]] = ()
    path_keywords: ClassVar[frozenset[str]] = frozenset()

    def check(self, input_shape: tuple[int, ...]) -> list[tuple[str, str]]:
        """(option key, problem) pairs for an input of ``input_shape``; none by default."""
        return []

    def batch_statistics(self) -> bool:
        """Whether the model computes statistics over each batch in training
        (BatchNormalization): then a batch may not be split into parts computed apart
        (``training.batch_split``). Assumed unless a model says otherwise."""
        return True

    def splits_by_default(self) -> bool:
        """Whether ``training.batch_split: auto`` computes this model's batches in parts:
        only where a split measured >= 1.2x faster (see
        :mod:`cvtrain.training.batch_parts`). Off unless a model says otherwise."""
        return False


@dataclass(frozen=True)
class ModelEntry:
    name: str
    options: type[ModelOptions]
    build: Callable[..., Any]
    description: str


_MODELS: Registry[ModelEntry] = Registry("model", FAMILIES)


def register_model(options: type[ModelOptions]) -> Callable:
    """Register ``build(options, input_shape, num_classes) -> keras.Model`` under the
    name fixed by ``options.name``'s Literal."""
    name = options.model_fields["name"].annotation.__args__[0]

    def decorate(build: Callable) -> Callable:
        doc = (build.__doc__ or "").strip().splitlines()
        _MODELS.add(name, ModelEntry(name, options, build, doc[0] if doc else ""))
        return build

    return decorate


def list_models() -> dict[str, ModelEntry]:
    return _MODELS.all()


def model_option_classes() -> dict[str, type[ModelOptions]]:
    return {name: entry.options for name, entry in list_models().items()}


def build_model(options: ModelOptions, input_shape: tuple[int, ...], num_classes: int):
    """Build the Keras model named by ``options.name`` (not compiled)."""
    return _MODELS.get(options.name).build(options, tuple(input_shape), num_classes)
