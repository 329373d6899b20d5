"""The exit of a run stopped by a stop request (SIGTERM: a spot reclaim, ``docker stop``,
Batch's timeout; see :mod:`cvtrain.stop`): what was kept is said in one line, and the exit
code :data:`EXIT_TERMINATED` tells a scheduler to try again (AWS Batch retries on it).
Ctrl-C (SIGINT) stops a run at once, wherever it is (checkpoints are replaced atomically,
so the last one stands): :class:`RunInterrupted` says in one line what was kept and how to
resume, and exits :data:`EXIT_INTERRUPTED`."""

from __future__ import annotations

from cvtrain.errors import EXIT_INTERRUPTED, CvtrainError
from cvtrain.training.checkpoint import EXIT_TERMINATED


class RunTerminated(CvtrainError):
    """A run stopped at a safe point on request; rerun with the same id to continue."""

    exit_code = EXIT_TERMINATED


class RunInterrupted(CvtrainError):
    """A run interrupted by Ctrl-C; the message says what was kept and how to resume."""

    exit_code = EXIT_INTERRUPTED
