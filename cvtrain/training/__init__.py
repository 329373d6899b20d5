"""Training: one run of a job, top to bottom (:mod:`~cvtrain.training.run`), with its
callbacks, device set-up, checkpoints, SIGTERM handling and ``metrics.json`` each in a
module of its own."""

from cvtrain.training.interrupt import RunInterrupted, RunTerminated
from cvtrain.training.run import run_job

__all__ = ["RunInterrupted", "RunTerminated", "run_job"]
