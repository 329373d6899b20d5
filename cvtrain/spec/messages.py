"""Pydantic's validation errors as the one line a user reads: the key path as written in
the job file, and what was expected there."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from cvtrain.data.registry import dataset_option_classes
from cvtrain.models.registry import model_option_classes
from cvtrain.spec.schema import JobSpec


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
        classes = model_option_classes() if tag == "name" else dataset_option_classes()
        known = ", ".join(sorted(classes))
        value = got.get(tag) if isinstance(got, dict) else None
        problem = f"unknown {what} {value!r}" if value is not None else f"missing {tag}"
        return f"{problem}; expected one of: {known}"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        return f"expected one of {expected}, got {got!r}"
    msg = err["msg"].removeprefix("Value error, ")
    msg = msg[0].lower() + msg[1:]
    if msg.startswith("input should be"):
        rest = msg[len("input should be"):]
        if rest.startswith((" greater", " less")):
            rest = " a number" + rest
        msg = "expected" + rest
    return f"{msg}, got {got!r}"




def error_parts(exc: ValidationError, doc: dict) -> tuple[str, str]:
    """(key path, what was expected there) for the first problem, and how many more
    there are."""
    err = exc.errors()[0]
    path = _location(err["loc"], doc)
    if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
        path = f"{path}.{err.get('ctx', {}).get('discriminator', 'name').strip(chr(39))}"
    more = len(exc.errors()) - 1
    extra = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return path, f"{_describe(err, doc)}{extra}"


def one_line(exc: ValidationError, doc: dict) -> str:
    """``key.path: what was expected`` for the first problem, and how many more there are."""
    path, problem = error_parts(exc, doc)
    return f"{path}: {problem}"
