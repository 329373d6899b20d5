"""The job schema: one strict pydantic model per section, unknown keys refused everywhere.

The ``data`` and ``model`` sections are discriminated unions generated from the dataset
and model registries (:mod:`cvtrain.data.registry`, :mod:`cvtrain.models.registry`), so a
new dataset or model family extends the schema by registering itself. What the schema
cannot say about one section alone (does this model fit this dataset?) is checked by
:mod:`cvtrain.spec.checks` right after validation.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from cvtrain.data.registry import dataset_option_classes
from cvtrain.errors import UsageError
from cvtrain.models.registry import model_option_classes


class SpecError(UsageError):
    """A job spec that cannot be used; ``str(err)`` is the one line to show the user."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Optimizer(Strict):
    name: Literal["sgd", "adam"] = "sgd"
    learning_rate: float = Field(0.01, gt=0, le=10)
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum (ignored by adam)")


class EarlyStopping(Strict):
    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: int = Field(15, ge=1)
    restore_best_weights: bool = True


class Training(Strict):
    epochs: int = Field(30, ge=1, le=100_000)
    batch_size: int = Field(32, ge=1, le=65_536)
    optimizer: Optimizer = Field(default_factory=Optimizer)
    early_stopping: EarlyStopping | None = Field(
        None, description="stop when the monitored validation metric stops improving"
    )
    backend: Literal["auto", "tensorflow", "jax"] = Field(
        "auto", description="Keras backend; auto: $KERAS_BACKEND, else tensorflow when it is "
        "installed, else jax")
    mixed_precision: Literal["auto", "on", "off"] = Field(
        "auto", description="16-bit compute (bfloat16 where the GPU has it, else float16); "
        "auto: on when a GPU is present"
    )
    jit_compile: Literal["auto", "on", "off"] = Field(
        "auto", description="XLA compilation; auto: Keras decides (on for GPUs)"
    )
    steps_per_execution: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        "auto", description="training steps per compiled call; auto: the largest divisor of "
        "the steps per epoch up to 16 (CPU) or 32 (GPU), so epochs stay whole")

    devices: Literal["auto"] | Annotated[int, Field(ge=1, le=64)] = Field(
        "auto", description="devices trained on in data parallel, each global batch of "
        "batch_size split between them; auto: every GPU the backend sees, else the CPU")
    batch_split: Literal["auto"] | Annotated[int, Field(ge=1)] = Field(
        "auto", description="TensorFlow on a CPU: each batch's forward and backward pass in "
        "this many parts side by side, one core each (the same batch, loss and gradient); "
        "auto: one part per core (at least 4 images each) for the models a split measured "
        ">= 1.2x faster for (BaseNet as Part 1 builds it), else 1; a number: any model "
        "without BatchNormalization")
    checkpoint_minutes: int | float | None = Field(
        5, description="minutes between checkpoints within an epoch (written at the next "
        "pause between executions; a resume continues from that step with the same "
        "batches); 0 or null: only at the end of each epoch. SIGTERM always keeps the step "
        "it stops at. Does not change the result: not in the fingerprint, and a run may be "
        "resumed with another value")


    @field_validator("mixed_precision", "jit_compile", mode="before")
    @classmethod
    def _yaml_on_off(cls, value):
        # YAML reads a bare on/off (and yes/no) as a boolean
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("checkpoint_minutes", mode="wrap")
    @classmethod
    def _minutes(cls, value, handler):
        # one clear line instead of one error per member of the union (a YAML boolean is
        # not a number of minutes)
        if value is None or (isinstance(value, int | float) and not isinstance(value, bool)
                             and 0 <= value < float("inf")):
            return value  # as written: 5 stays 5 in a resolved spec
        raise ValueError("expected a number of minutes >= 0 (0 or null: only at the end "
                         "of each epoch)")

    @field_validator("steps_per_execution", "devices", "batch_split", mode="wrap")
    @classmethod
    def _auto_or_count(cls, value, handler):
        # one clear line instead of one error per member of the union
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)
                               and value >= 1):
            return handler(value)
        raise ValueError("expected auto or an integer >= 1")


#: spec keys that do not change a run's result (how often it checkpoints): left out of the
#: fingerprint, of the resume check and of the description's note of --set values
NOT_IN_RESULT = ("training.checkpoint_minutes",)


class Report(Strict):
    """What the coursework report measured for this experiment, to compare against."""

    test_accuracy: float | None = Field(None, ge=0, le=1)
    test_loss: float | None = Field(None, ge=0)
    note: str | None = None


def _union(classes: dict[str, type[BaseModel]], tag: str) -> Any:
    return Annotated[Union[tuple(classes.values())], Field(discriminator=tag)]  # noqa: UP007


DataSpec = _union(dataset_option_classes(), "dataset")
ModelSpec = _union(model_option_classes(), "name")


class JobSpec(Strict):
    """A fully resolved experiment: data, model, training and the report's numbers.

    Validated once, then treated as read-only: runners copy it
    (``model_copy``) rather than change it."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    description: str = ""
    seed: int | None = Field(None, ge=0, description="makes a CPU run repeatable")
    data: DataSpec  # type: ignore[valid-type]
    model: ModelSpec  # type: ignore[valid-type]
    training: Training = Field(default_factory=Training)
    report: Report = Field(default_factory=Report)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
