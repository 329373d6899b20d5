"""SIGTERM during training (a spot reclaim, ``docker stop``, Batch's timeout): stop at once,
keep the last completed epoch's checkpoint, and exit with :data:`EXIT_TERMINATED` so the
run can be resumed (AWS Batch retries on that code)."""

from __future__ import annotations

import contextlib
import signal
import threading

from cvtrain.errors import CvtrainError
from cvtrain.training.checkpoint import EXIT_TERMINATED


class Terminated(Exception):
    """SIGTERM arrived while training."""


class RunTerminated(CvtrainError):
    """A run stopped by SIGTERM after its checkpoint was kept; rerun to resume."""

    exit_code = EXIT_TERMINATED


@contextlib.contextmanager
def sigterm_raises():
    """While training, SIGTERM raises :class:`Terminated` in the main thread, so the run
    can report, sync its last checkpoint and exit with :data:`EXIT_TERMINATED`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
