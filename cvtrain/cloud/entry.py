"""What ``cvtrain run-batch`` does inside a Batch container, read from its environment:
the spec, the sweep variant of this array child and the run id every attempt shares.
Pure: the runner (:meth:`cvtrain.cloud.batch.BatchRunner.entry`) validates and runs it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from cvtrain.cloud.definitions import (
    CONTAINER_RUNS,
    ENV_ARRAY_INDEX,
    ENV_ATTEMPT,
    ENV_JOB_ID,
    ENV_RESULTS,
    ENV_RUN_ID,
    ENV_RUNS,
    ENV_SPEC,
    ENV_SPECS,
    ENV_SWEEP,
    ENV_TASK,
    TASK_FEATURES,
    decode_spec,
    decode_specs,
    run_id_for,
)
from cvtrain.errors import UsageError


@dataclass(frozen=True)
class EntryPlan:
    """The job of one Batch container: resolved spec text, the variant's ``--set`` list,
    the stable run id, the results root and the local run folder."""

    spec_yaml: str
    overrides: list[str]
    run_id: str
    results: str
    index: int | None
    out: str = CONTAINER_RUNS
    attempt: str | None = None
    #: None: train the spec; ``features``: only extract and share its backbone features
    task: str | None = None


def _variants(env: Mapping[str, str]) -> list[list[str]]:
    if not env.get(ENV_SWEEP):
        return [[]]
    try:
        variants = json.loads(env[ENV_SWEEP])
    except ValueError:
        variants = None
    if (not isinstance(variants, list) or not variants
            or not all(isinstance(v, list) and all(isinstance(s, str) for s in v)
                       for v in variants)):
        raise UsageError(f"${ENV_SWEEP}: expected a JSON list of lists of KEY=VALUE")
    return variants


def entry_plan(env: Mapping[str, str]) -> EntryPlan:
    """Pick the variant ``AWS_BATCH_JOB_ARRAY_INDEX`` and the stable run id from the
    container's environment (``CVTRAIN_RUN_ID`` when the job continues an earlier run);
    any missing or malformed variable is one clear line."""
    spec_var = ENV_SPECS if env.get(ENV_SPECS) else ENV_SPEC
    missing = [n for n in (spec_var, ENV_RESULTS, ENV_JOB_ID) if not env.get(n)]
    if missing:
        raise UsageError(f"run-batch: ${', $'.join(missing)} not set; expected the "
                         "environment of a job made by `cvtrain submit`")
    if spec_var == ENV_SPECS:  # a job set: a spec per child, no sweep
        specs = decode_specs(env[ENV_SPECS])
        variants = [[] for _ in specs]
    else:
        specs = [decode_spec(env[ENV_SPEC])]
        variants = _variants(env)
    raw_index = env.get(ENV_ARRAY_INDEX)
    index = None
    if raw_index not in (None, ""):
        if not raw_index.isdigit() or int(raw_index) >= len(variants):
            raise UsageError(f"${ENV_ARRAY_INDEX}={raw_index}: expected 0..{len(variants) - 1}")
        index = int(raw_index)
    elif len(variants) > 1:
        raise UsageError(f"${ENV_ARRAY_INDEX} not set; expected it for a sweep or set of "
                         f"{len(variants)}")
    task = env.get(ENV_TASK) or None
    if task not in (None, TASK_FEATURES):
        raise UsageError(f"${ENV_TASK}={task}: expected {TASK_FEATURES} or nothing")
    spec_yaml = specs[index or 0] if len(specs) > 1 else specs[0]
    return EntryPlan(spec_yaml=spec_yaml, overrides=list(variants[index or 0]),
                     run_id=env.get(ENV_RUN_ID) or run_id_for(env[ENV_JOB_ID], index),
                     results=env[ENV_RESULTS],
                     index=index, out=env.get(ENV_RUNS) or CONTAINER_RUNS,
                     attempt=env.get(ENV_ATTEMPT) or None, task=task)
