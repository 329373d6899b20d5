"""A job set on AWS Batch whose head jobs share one backbone pass: the set split into the
Batch jobs that submit it. Pure: ``submit_job`` arguments, no AWS calls.

Each array child of a set runs on an instance of its own, so head jobs that train on the
same backbone features (``resnet50_features_dense``, ``_mlp``, ``_maps_convhead`` on the
same data, image size and weights) would each run the backbone over the whole dataset.
When two or more heads of a set have the same features, the set becomes:

- a *features* job (``CVTRAIN_TASK=features``, one of the heads' specs): it extracts the
  features once and shares them in the results root (:mod:`cvtrain.data.birds.shared`);
- the *heads* of that group, as their own job (an array when several), ``dependsOn`` the
  features job, so they start once it succeeded and fetch the features instead of
  extracting them (a head that finds none extracts its own);
- the *jobs* that need no features (CIFAR, fine-tuning, a lone head), as their own job or
  array, which waits for nothing.

A set without such a group stays one array job. (A dependency on the whole set's array
would hold back every job; Batch's array dependencies are per child index, N_TO_N, which
is not this shape, so the heads become a separate array instead.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cvtrain.cloud.definitions import ENV_TASK, TASK_FEATURES, set_name, submit_job_kwargs

if TYPE_CHECKING:
    from cvtrain.spec import JobSpec

FEATURES, HEADS, JOBS = "features", "heads", "jobs"


@dataclass(frozen=True)
class Part:
    """One Batch job of a split set: its role, the set's jobs it runs (by position; for
    a features job, the heads it serves), its ``submit_job`` arguments without
    ``jobDefinition`` and ``dependsOn``, and the part it waits for (a position in the
    list of parts), if any."""

    role: str
    indices: tuple[int, ...]
    submit_job: dict
    after: int | None = None

    @property
    def array(self) -> bool:
        return self.role != FEATURES and len(self.indices) > 1


def feature_groups(specs: Sequence[JobSpec]) -> list[tuple[int, ...]]:
    """Positions of the jobs that train on the same backbone features, for each such
    group of two or more, in the order of their first job."""
    from cvtrain.data.birds.shared import share_key

    groups: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        if (key := share_key(spec)) is not None:
            groups.setdefault(key, []).append(i)
    return [tuple(g) for g in groups.values() if len(g) > 1]


def split_set(specs: Sequence[JobSpec], definition: str, queue: str) -> list[Part]:
    """The parts in the order they are submitted (features jobs first, then the jobs that
    wait for nothing, then the heads); no parts (``[]``) when no two heads share features."""
    groups = feature_groups(specs)
    if not groups:
        return []
    parts: list[Part] = []
    heads: list[Part] = []
    for group in groups:
        first = specs[group[0]]
        kwargs = submit_job_kwargs(f"features-{first.name}", first.to_yaml(), [[]],
                                   definition, queue)
        kwargs["containerOverrides"]["environment"].append(
            {"name": ENV_TASK, "value": TASK_FEATURES})
        # (tag values: letters, digits, spaces and _.:/=+-@ only)
        kwargs["tags"] = {"cvtrain:job": f"features {set_name([specs[i].name for i in group])}"
                          [:256]}
        parts.append(Part(FEATURES, group, kwargs))
        heads.append(Part(HEADS, group, _children(specs, group, definition, queue),
                          after=len(parts) - 1))
    grouped = {i for group in groups for i in group}
    rest = tuple(i for i in range(len(specs)) if i not in grouped)
    if rest:
        parts.append(Part(JOBS, rest, _children(specs, rest, definition, queue)))
    return parts + heads


def _children(specs: Sequence[JobSpec], indices: tuple[int, ...], definition: str,
              queue: str) -> dict:
    """One job for one spec, else an array job with a child per spec (as a set is)."""
    chosen = [specs[i] for i in indices]
    if len(chosen) == 1:
        return submit_job_kwargs(chosen[0].name, chosen[0].to_yaml(), [[]], definition, queue)
    names = [s.name for s in chosen]
    return submit_job_kwargs(set_name(names), "", [[]], definition, queue,
                             set_specs=[s.to_yaml() for s in chosen])


__all__ = ["FEATURES", "HEADS", "JOBS", "Part", "feature_groups", "split_set"]
