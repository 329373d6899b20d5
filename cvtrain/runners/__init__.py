"""Where a run happens. ``cvtrain run --runner`` picks a runner; every runner ends in the
same :func:`cvtrain.training.run_job`, in this process or in a container (and on AWS
Batch, :class:`cvtrain.cloud.batch.BatchRunner`, in a container on a cloud GPU).

The interface is one method: ``Runner.run(spec, ...) -> RunResult``, what became of the run
(:class:`~cvtrain.runs.RunResult`: its folder, its metrics, its exit code, 0 for a complete
run folder). ``spec`` is a resolved :class:`~cvtrain.spec.JobSpec` or the path of a job
file. Options a runner does not understand are refused by the CLI, not here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cvtrain.runs import RunResult
    from cvtrain.spec import JobSpec

RUNNERS = ("local", "docker")


def as_spec(spec: JobSpec | str | os.PathLike) -> JobSpec:
    """A resolved spec from a spec or a job file path (``extends`` applied)."""
    if isinstance(spec, str | os.PathLike):
        from cvtrain.spec import load_spec

        return load_spec(Path(spec))
    return spec


class Runner:
    """Runs one job and says what became of it."""

    name = "runner"

    def run(self, spec: JobSpec | str | os.PathLike, *, out: Path | None = None,
            run_id: str | None = None, **options) -> RunResult:
        raise NotImplementedError


class LocalRunner(Runner):
    """In this process: exactly what ``cvtrain run`` always did. ``options`` (e.g. results,
    endpoint_url) go to :func:`cvtrain.training.run_job` as they are; its errors are raised
    as they are."""

    name = "local"

    def run(self, spec, *, out=None, run_id=None, **options) -> RunResult:
        from cvtrain.training import run_job

        return run_job(as_spec(spec), out=out, run_id=run_id, **options)


def get_runner(name: str, **settings) -> Runner:
    """``local`` or ``docker`` (settings: image, gpus, network)."""
    if name == "local":
        return LocalRunner()
    if name == "docker":
        from cvtrain.runners.docker import DockerRunner

        return DockerRunner(**settings)
    from cvtrain.errors import UsageError

    raise UsageError(f"--runner {name!r}: expected one of {', '.join(RUNNERS)}")


__all__ = ["RUNNERS", "LocalRunner", "Runner", "as_spec", "get_runner"]
