"""A set of jobs: what ``cvtrain run`` and ``cvtrain submit`` are given (job files, job
names, folders of jobs), read into specs with the ``--set`` values that apply to each, and
the loop that trains them one after another with a runner.

Every job of a set is checked before any of them trains or is submitted. A folder's jobs
come in steps order (:func:`cvtrain.spec.catalog.in_steps_order`: each right after the
job it extends), as ``cvtrain jobs list`` shows them.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cvtrain.runners import Runner
    from cvtrain.runs import RunResult
    from cvtrain.spec import JobSpec


def load_set(refs: list[str], sets: list[str],
             seed: int | None) -> list[tuple[Path, JobSpec]]:
    """Each job named, with its job file: a folder gives each job file under it in steps
    order, and each spec takes the ``--set`` values that apply to it (plain ones to all,
    ``DATASET:KEY=VALUE`` to the jobs of that dataset). A qualified value no job can take
    is refused."""
    from cvtrain.errors import UsageError
    from cvtrain.spec import load_spec
    from cvtrain.spec.catalog import find_job, in_steps_order, job_files

    files: list[Path] = []
    for ref in refs:
        found = in_steps_order(job_files(Path(ref))) if Path(ref).is_dir() else [find_job(ref)]
        files += [f for f in found if f not in files]
    qualified: dict[str, list[str]] = {}
    plain = []
    for text in sets:
        dataset, key, rest = _qualified(text)
        if dataset is not None:
            qualified.setdefault(dataset, []).append(f"{key}={rest}")
        else:
            plain.append(text)
    jobs = []
    for path in files:
        spec = load_spec(path, plain, seed=seed)
        if qualified.get(spec.data.dataset):
            spec = load_spec(path, plain + qualified[spec.data.dataset], seed=seed)
        jobs.append((path, spec))
    datasets = {spec.data.dataset for _, spec in jobs}
    unused = sorted(set(qualified) - datasets)
    if unused:
        raise UsageError(f"--set {unused[0]}:{qualified[unused[0]][0]}: no job of this run "
                         f"reads dataset {unused[0]}; expected one of "
                         f"{', '.join(sorted(datasets))}")
    return jobs


def _qualified(text: str) -> tuple[str | None, str, str]:
    """(dataset, key, value) of a ``DATASET:KEY=VALUE`` text; dataset None for a plain one."""
    head, _, rest = text.partition("=")
    dataset, colon, key = head.partition(":")
    if colon and "." in key and "." not in dataset:
        return dataset, key, rest
    return None, head, rest


def sets_for(sets: list[str], dataset: str) -> list[str]:
    """The ``--set`` texts that apply to a job of ``dataset``, as given."""
    return [text for text in sets if _qualified(text)[0] in (None, dataset)]


def rerun_command(ref: str, sets: list[str], seed: int | None, out: Path | None,
                  results: str | None, endpoint_url: str | None) -> str:
    """``cvtrain run REF`` with the options that make its spec and place (not the run id,
    which the caller adds), quoted for a shell."""
    args = ["cvtrain", "run", ref]
    for text in sets:
        args += ["--set", text]
    for option, value in (("--seed", seed), ("--out", out), ("--results", results),
                          ("--endpoint-url", endpoint_url)):
        if value is not None:
            args += [option, str(value)]
    return shlex.join(args)


def run_set(runner: Runner, specs: list[JobSpec], options: dict,
            reruns: list[str] | None = None,
            say=None) -> list[tuple[JobSpec, str, RunResult]]:
    """Each job in turn with ``runner`` (``options`` for each run), a line as it starts and
    as it ends on ``say`` (default stdout). A failure is said and the rest go on; a stop
    request (SIGTERM) ends the set after the job it stopped, and Ctrl-C at once.
    ``reruns``: each job's command, for the line of an interrupted run. Returns (spec,
    status, result) for each job that ran, in order; a result's ``code`` is its exit
    code."""
    import logging

    from cvtrain import stop
    from cvtrain.errors import CvtrainError
    from cvtrain.runs import RunResult
    from cvtrain.training import RunInterrupted, RunTerminated

    say = say or sys.stdout
    # several models in one process: TensorFlow's python logger warns about retracing
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    done: list[tuple[JobSpec, str, RunResult]] = []
    for i, spec in enumerate(specs, 1):
        print(f"== [{i}/{len(specs)}] {spec.name} ({time.perf_counter() - t0:.0f} s into the "
              "set)", file=say, flush=True)
        try:
            result = runner.run(spec, **options, **({"rerun": reruns[i - 1]} if reruns else {}))
            status = ("done" if result.code == 0 else
                      f"stopped (exit {result.code})" if stop.requested() else
                      f"failed (exit {result.code})")
        except (RunTerminated, RunInterrupted):
            raise
        except CvtrainError as exc:
            result, status = RunResult(None, None, exc.exit_code), f"failed: {exc}"
        print(f"== {spec.name}: {status}", file=say, flush=True)
        done.append((spec, status, result))
        if stop.requested() and i < len(specs):  # a container stopped by SIGTERM: so is the set
            left = len(specs) - i
            print(f"cvtrain: stopped by {stop.signal_name()}: {left} job{'s' * (left > 1)} of "
                  "the set not started", file=sys.stderr, flush=True)
            break
    return done


__all__ = ["load_set", "rerun_command", "run_set", "sets_for"]
