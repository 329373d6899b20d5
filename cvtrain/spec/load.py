"""Loading a job: YAML text -> ``extends`` merged -> ``--set`` overrides -> validated spec.

A job file is YAML. It may name a parent with ``extends: other.yaml`` (relative to the
file), in which case the parent is loaded first and the child's mappings are merged into
it key by key (lists and scalars replace). ``--set a.b=value`` overrides come next, then
the result is validated against :class:`~cvtrain.spec.schema.JobSpec`, then the checks
that span sections (:mod:`cvtrain.spec.checks`). Any problem becomes a
:class:`~cvtrain.spec.schema.SpecError` whose message is one line naming the file, the key
path and what was expected.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from cvtrain.spec.checks import check_fit
from cvtrain.spec.messages import error_parts
from cvtrain.spec.schema import NOT_IN_RESULT, JobSpec, SpecError


def parse_yaml(text: str, source: str) -> dict:
    """The mapping a job's YAML text holds (an empty document is an empty mapping)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SpecError(f"{source}: invalid YAML{where}: {problem}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise SpecError(f"{source}: expected a mapping at the top level, got "
                        f"{type(doc).__name__}")
    return doc


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such job file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder, expected a job file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start}); expected a YAML job "
                        "file") from None
    if "\0" in text:
        raise SpecError(f"{path}: holds NUL characters; expected a YAML job file, not "
                        "binary or UTF-16 data")
    return parse_yaml(text, str(path))


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


#: union tags: setting one to another member starts that member's options afresh, as
#: ``extends`` does (``--set model.name=bonus`` is bonus with its defaults)
TAGS = {"model": "name", "data": "dataset"}


def apply_overrides(doc: dict, overrides: list[str]) -> dict:
    """``doc`` with ``--set`` overrides applied; union tags (``model.name``, ``data.dataset``)
    first, so the other overrides apply to the member they name, whatever their order."""
    doc = merge(doc, {})
    parsed = [(text, *parse_override(text)) for text in overrides]
    tags = [p for p in parsed if len(p[1]) == 2 and TAGS.get(p[1][0]) == p[1][1]]
    for _text, parts, value in tags:
        section = doc.get(parts[0])
        if not isinstance(section, dict) or section.get(parts[1]) != value:
            doc[parts[0]] = {parts[1]: value}
    for text, parts, value in parsed:
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




def validate(doc: dict, source: str, overrides: Sequence[str] = ()) -> JobSpec:
    """``doc`` as a :class:`JobSpec`, every section checked on its own and together. A
    problem at a key one of ``overrides`` set is blamed on that ``--set``, not on
    ``source``."""
    try:
        spec = JobSpec.model_validate(doc)
    except ValidationError as exc:
        raise SpecError(_blame(source, *error_parts(exc, doc), overrides)) from None
    if problem := check_fit(spec):
        raise SpecError(_blame(source, *problem, overrides))
    return spec


def _blame(source: str, path: str, problem: str, overrides: Sequence[str]) -> str:
    """``source: path: problem``, or ``--set KEY=VALUE: problem (job: source)`` when the
    problem is at (or under, or above) a key that ``--set`` gave, the last one first."""
    for text in reversed(list(overrides)):
        key = text.partition("=")[0].strip()
        if key == path or path.startswith((f"{key}.", f"{key}[")) or key.startswith(f"{path}."):
            where = "" if key == path else f"{path}: "
            return f"--set {text}: {where}{problem} (job: {source})"
    return f"{source}: {path}: {problem}"


def load_spec(path: str | Path, overrides: Sequence[str] | None = None,
              seed: int | None = None) -> JobSpec:
    """Load, merge, override and validate a job file into a :class:`JobSpec`. A problem
    at a key that ``overrides`` (``--set``) gave is blamed on that ``--set``."""
    path = Path(path)
    return _finish(load_raw(path), overrides, seed, str(path), blame=True)


def spec_from_text(text: str, source: str, overrides: Sequence[str] | None = None,
                   seed: int | None = None) -> JobSpec:
    """A spec from resolved YAML text (``spec.yaml`` of a run, a spec sent to a container
    or a cloud job); ``source`` names it in error messages. ``extends`` is not followed:
    resolved text has none."""
    return _finish(parse_yaml(text, source), overrides, seed, source)


def _finish(doc: dict, overrides: Sequence[str] | None, seed: int | None,
            source: str, blame: bool = False) -> JobSpec:
    overrides = list(overrides or [])
    seeded = doc if seed is None else {**doc, "seed": seed}
    full = apply_overrides(doc, overrides)
    if seed is not None:
        full["seed"] = seed  # --seed over --set seed=...
    try:
        spec = validate(full, source, overrides if blame else ())
    except SpecError as exc:
        if not (blame and overrides) or str(exc).startswith("--set "):
            raise
        try:  # a problem at a key no --set gave: whose is it, the file's or the --set's?
            validate(seeded, source)
        except SpecError:
            raise exc from None
        given = " ".join(f"--set {text}" for text in overrides)
        raise SpecError(f"{given}: {str(exc).removeprefix(f'{source}: ')} "
                        f"(job: {source})") from None
    changed = _changed_by(doc, spec, overrides, seed, source)
    if changed:
        spec = spec.model_copy(update={"description": note_overrides(spec.description,
                                                                     changed)})
    return spec


#: how a resolved spec's description says which ``--set`` values changed the job file's
#: values: descriptions are prose ("30 epochs") that an override can make stale
OVERRIDE_NOTE = "; changed by"


def note_overrides(description: str, overrides: Sequence[str]) -> str:
    """``description`` with a note naming ``overrides`` (``--set`` texts), added to the
    note it may have already (a spec resolved twice: a container applying a sweep's
    variant to a resolved spec)."""
    added = " ".join(f"--set {text}" for text in overrides)
    if OVERRIDE_NOTE in description:
        return f"{description} {added}"
    return f"{description}{OVERRIDE_NOTE} {added}" if description else f"changed by {added}"


def _changed_by(doc: dict, spec: JobSpec, overrides: list[str], seed: int | None,
                source: str) -> list[str]:
    """The ``--set`` texts that changed a value of the job (``description`` itself set:
    none, the words are the user's own)."""
    if not overrides:
        return []
    if any(parse_override(text)[0] == ["description"] for text in overrides):
        return []
    if seed is not None:
        doc = {**doc, "seed": seed}
    try:
        plain = validate(doc, source).model_dump(mode="json")
    except SpecError:  # the file alone is not valid: every override counts
        return list(overrides)
    resolved = spec.model_dump(mode="json")
    changed = []
    for text in overrides:
        parts = parse_override(text)[0]
        if ".".join(parts) in NOT_IN_RESULT:  # how often it checkpoints: the job is the same
            continue
        a, b = plain, resolved
        for part in parts:
            a = a.get(part) if isinstance(a, dict) else None
            b = b.get(part) if isinstance(b, dict) else None
        if a != b:
            changed.append(text)
    return changed


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
