"""Sweeps: ``--sweep key=v1,v2`` axes expanded into one validated spec per combination.

Expanded here, in the spec layer, so every runner can run the same variants: AWS Batch
makes one array job of them, and each variant is checked like a job file before anything
is submitted.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from cvtrain.spec.load import apply_overrides, parse_override, validate
from cvtrain.spec.schema import JobSpec, SpecError

#: the most variants one sweep may make (AWS Batch's array size limit)
MAX_VARIANTS = 10_000


def parse_sweep(items: Sequence[str], limit: int = MAX_VARIANTS) -> list[list[str]]:
    """``["a.b=1,2", "c=x,y"]`` -> every combination as ``--set`` lists, in a stable order
    (the first key varies slowest). No sweep: one variant without overrides."""
    axes: list[list[str]] = []
    seen: set[str] = set()
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not values.strip():
            raise SpecError(f"--sweep {item}: expected KEY=V1,V2,... such as "
                            "training.optimizer.learning_rate=0.1,0.01")
        if key in seen:
            raise SpecError(f"--sweep {item}: {key} is swept twice; give its values once")
        seen.add(key)
        parse_override(f"{key}={values.split(',')[0]}")  # the key's syntax, one clear line
        axes.append([f"{key}={v.strip()}" for v in values.split(",")])
    variants = [list(combo) for combo in itertools.product(*axes)]
    if len(variants) > limit:
        raise SpecError(f"--sweep: {len(variants)} variants; expected at most {limit}")
    return variants


@dataclass(frozen=True)
class Variant:
    """One point of a sweep: its overrides and the spec they make."""

    overrides: list[str]
    spec: JobSpec


def expand_sweep(spec: JobSpec, items: Sequence[str],
                 limit: int = MAX_VARIANTS) -> list[Variant]:
    """Every variant of ``spec`` the sweep ``items`` make, each validated (a bad value is
    one line naming the variant and the key)."""
    variants = parse_sweep(items, limit)
    if variants == [[]]:
        return [Variant([], spec)]
    doc = spec.model_dump(mode="json")
    return [Variant(v, validate(apply_overrides(doc, v), f"--sweep variant {i}"))
            for i, v in enumerate(variants)]
