"""Job specs: one strict schema, layered once.

A job file is YAML. It may name a parent with ``extends: other.yaml`` (relative to the
file), in which case the parent is loaded first and the child's mappings are merged into
it key by key (lists and scalars replace). ``--set a.b=value`` overrides come next, then
the result is validated against :class:`JobSpec`, whose every mapping refuses unknown
keys. Any problem becomes a :class:`SpecError` whose message is one line naming the file,
the key path and what was expected.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cvtrain.errors import UsageError
from cvtrain.models.registry import model_option_classes


class SpecError(UsageError):
    """A job spec that cannot be used; ``str(err)`` is the one line to show the user."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Augment(Strict):
    """Random transforms applied to training batches only (never validation or test)."""

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


class CifarData(Strict):
    """CIFAR-100: where it is, which classes, and how it is split and prepared."""

    dataset: Literal["cifar100"] = Field(description="dataset name")
    path: str | None = Field(
        None,
        description="local archive or folder; default: the user cache, downloading the "
        "official archive when missing",
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


class BirdsData(Strict):
    """Caltech-UCSD Birds: a folder or .tgz in the 2010 or the 2011 layout."""

    dataset: Literal["cub200"] = Field(description="dataset name")
    path: str | None = Field(
        None, description="folder or .tgz holding images/ and lists/ (2010) or images.txt, "
        "train_test_split.txt, image_class_labels.txt (2011)")
    layout: Literal["2010", "2011"] = Field("2010", description="which edition's file layout")
    image_size: int = Field(224, ge=32, le=1024, description="images are resized to this square")
    validation_split: float = Field(
        0.1, gt=0, lt=1, description="fraction of the training set held out for validation")

    @field_validator("layout", mode="before")
    @classmethod
    def _year_as_text(cls, value):
        return str(value) if isinstance(value, int) else value  # `layout: 2010` in YAML


Data = Annotated[Union[CifarData, BirdsData], Field(discriminator="dataset")]  # noqa: UP007


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
    mixed_precision: Literal["auto", "on", "off"] = Field(
        "auto", description="float16 compute; auto: on when a GPU is present"
    )
    jit_compile: Literal["auto", "on", "off"] = Field(
        "auto", description="XLA compilation; auto: Keras decides (on for GPUs)"
    )
    steps_per_execution: int = Field(1, ge=1, description="training steps per graph call")

    @field_validator("mixed_precision", "jit_compile", mode="before")
    @classmethod
    def _yaml_on_off(cls, value):
        # YAML reads a bare on/off (and yes/no) as a boolean
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value


class Report(Strict):
    """What the coursework report measured for this experiment, to compare against."""

    test_accuracy: float | None = Field(None, ge=0, le=1)
    test_loss: float | None = Field(None, ge=0)
    note: str | None = None


def _model_union() -> Any:
    classes = tuple(model_option_classes().values())
    return Annotated[Union[classes], Field(discriminator="name")]  # noqa: UP007


ModelSpec = _model_union()


class JobSpec(Strict):
    """A fully resolved experiment: data, model, training and the report's numbers."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)
    description: str = ""
    seed: int | None = Field(None, ge=0, description="makes a CPU run repeatable")
    data: Data
    model: ModelSpec  # type: ignore[valid-type]
    training: Training = Field(default_factory=Training)
    report: Report = Field(default_factory=Report)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ---------------------------------------------------------------------------- loading


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such job file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SpecError(f"{path}: invalid YAML{where}: {problem}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise SpecError(f"{path}: expected a mapping at the top level, got {type(doc).__name__}")
    return doc


def merge(base: dict, over: dict) -> dict:
    """Deep-merge ``over`` into a copy of ``base``: mappings merge, anything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_raw(path: Path, _chain: tuple[Path, ...] = ()) -> dict:
    """The merged mapping of a job file and its ``extends`` ancestors, not yet validated.

    ``name`` is never inherited: a job is named by its own ``name`` key or its file stem.
    """
    path = Path(path)
    real = path.resolve()
    if real in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, real))
        raise SpecError(f"{path}: extends: cycle ({cycle})")
    doc = _read_yaml(path)
    parent = doc.pop("extends", None)
    name = doc.pop("name", None) or path.stem
    if parent is not None:
        if not isinstance(parent, str) or not parent:
            raise SpecError(f"{path}: extends: expected a relative path to another job file")
        base = load_raw(path.parent / parent, (*_chain, real))
        base.pop("name", None)
        # a child naming another model starts that model's options afresh
        child_model, base_model = doc.get("model"), base.get("model")
        if (isinstance(child_model, dict) and isinstance(base_model, dict)
                and child_model.get("name", base_model.get("name")) != base_model.get("name")):
            base.pop("model")
        doc = merge(base, doc)
    return {"name": name, **doc}


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], YAML-typed value)."""
    key, sep, value = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(re.fullmatch(r"[A-Za-z0-9_]+", p) for p in parts):
        raise SpecError(f"--set {text}: expected KEY=VALUE with a dotted key such as "
                        "training.epochs=2")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return parts, parsed


def apply_overrides(doc: dict, overrides: list[str]) -> dict:
    doc = merge(doc, {})
    for text in overrides:
        parts, value = parse_override(text)
        node = doc
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise SpecError(f"--set {text}: {where} is a value, not a mapping")
            else:
                child = node[part] = dict(child)
            node = child
        node[parts[-1]] = value
    return doc


def _location(loc: tuple, doc: Any) -> str:
    """Turn pydantic's error location into the key path the user wrote.

    Pydantic inserts the union tag (e.g. ``model.basenet.dropout``); walking the input
    keeps only the parts that are really keys of the document.
    """
    parts: list[str] = []
    node = doc
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and part in node:
            parts.append(str(part))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int):
            parts.append(f"[{part}]")
            node = node[part] if part < len(node) else None
        elif last or not isinstance(node, dict):
            parts.append(str(part))
            node = None
    return ".".join(parts).replace(".[", "[")


def _union_members(field: Any) -> dict[str, type[BaseModel]] | None:
    """For a discriminated union field: {tag: class}; else None."""
    if not isinstance(field.discriminator, str):
        return None
    return {cls.model_fields[field.discriminator].annotation.__args__[0]: cls
            for cls in field.annotation.__args__}


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys the schema allows at the mapping holding the error location.

    Pydantic's location for a discriminated union holds the tag after the field name
    (``model.basenet.dropuot``), which picks the member class."""
    cls: Any = JobSpec
    union: dict | None = None
    for part in loc[:-1]:
        if union is not None:
            cls, union = union.get(part), None
            continue
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        union = _union_members(field)
        cls = None if union is not None else _unwrap(field.annotation)
    return sorted(getattr(cls, "model_fields", {})) if cls is not None else []


def _unwrap(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation if isinstance(annotation, type) else None


def _describe(err: dict, doc: dict) -> str:
    kind, loc = err["type"], err["loc"]
    got = err.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc)
        hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
        return f"unknown key{hint}"
    if kind == "missing":
        return "required key is missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        ctx = err.get("ctx", {})
        tag = ctx.get("discriminator", "").strip("'")
        what = "model" if tag == "name" else "dataset"
        known = ", ".join(sorted(model_option_classes())) if tag == "name" else \
            ctx.get("expected_tags", "").replace("'", "")
        value = got.get(tag) if isinstance(got, dict) else None
        problem = f"unknown {what} {value!r}" if value is not None else f"missing {tag}"
        return f"{problem}; expected one of: {known}"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"expected one of {expected}, got {got!r}"
    msg = err["msg"]
    msg = msg[0].lower() + msg[1:]
    if msg.startswith("input should be"):
        rest = msg[len("input should be"):]
        if rest.startswith((" greater", " less")):
            rest = " a number" + rest
        msg = "expected" + rest
    return f"{msg}, got {got!r}"


def validate(doc: dict, source: str) -> JobSpec:
    try:
        return JobSpec.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = _location(err["loc"], doc)
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path = f"{path}.{err.get('ctx', {}).get('discriminator', 'name').strip(chr(39))}"
        more = len(exc.errors()) - 1
        extra = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise SpecError(f"{source}: {path}: {_describe(err, doc)}{extra}") from None


def load_spec(path: str | Path, overrides: list[str] | None = None,
              seed: int | None = None) -> JobSpec:
    """Load, merge, override and validate a job file into a frozen :class:`JobSpec`."""
    path = Path(path)
    doc = apply_overrides(load_raw(path), list(overrides or []))
    if seed is not None:
        doc["seed"] = seed
    return validate(doc, str(path))


def json_schema() -> str:
    """JSON Schema of a job file (a resolved one; a file with ``extends`` may omit keys)."""
    schema = JobSpec.model_json_schema()
    schema["properties"]["extends"] = {
        "type": "string",
        "description": "path of a parent job file, relative to this one",
    }
    schema["properties"]["name"]["description"] = "job name (default: the file's stem)"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "cvtrain job spec"
    return json.dumps(schema, indent=2)
