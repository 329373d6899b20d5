"""Where a run happens. ``cvtrain run --backend`` picks a runner; every runner ends in the
same :func:`cvtrain.training.run_job`, in this process or in a container.

The interface is one method: ``Runner.run(spec, ...) -> int``, the run's exit code (0 for a
complete run folder). ``spec`` is a resolved :class:`~cvtrain.spec.JobSpec` or the path of a
job file. Options a runner does not understand are refused by the CLI, not here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cvtrain.spec import JobSpec

BACKENDS = ("local", "docker")


def as_spec(spec: JobSpec | str | os.PathLike) -> JobSpec:
    """A resolved spec from a spec or a job file path (``extends`` applied)."""
    if isinstance(spec, str | os.PathLike):
        from cvtrain.spec import load_spec

        return load_spec(Path(spec))
    return spec


class Runner:
    """Runs one job and returns its exit code."""

    name = "runner"

    def run(self, spec: JobSpec | str | os.PathLike, *, out: Path | None = None,
            run_id: str | None = None, **options) -> int:
        raise NotImplementedError


class LocalRunner(Runner):
    """In this process: exactly what ``cvtrain run`` always did. ``options`` (e.g. results,
    endpoint_url) go to :func:`cvtrain.training.run_job` as they are."""

    name = "local"

    #: the :class:`~cvtrain.training.RunResult` of the last run (metrics for a set's table)
    last = None

    def run(self, spec, *, out=None, run_id=None, **options) -> int:
        from cvtrain.training import run_job

        self.last = None
        self.last = run_job(as_spec(spec), out=out, run_id=run_id, **options)
        return 0


def get_runner(backend: str, **settings) -> Runner:
    """``local`` or ``docker`` (settings: image, gpus, network)."""
    if backend == "local":
        return LocalRunner()
    if backend == "docker":
        from cvtrain.runners.docker import DockerRunner

        return DockerRunner(**settings)
    from cvtrain.errors import UsageError

    raise UsageError(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "LocalRunner", "Runner", "as_spec", "get_runner"]
