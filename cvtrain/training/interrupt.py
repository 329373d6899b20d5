"""The exit of a run stopped by a stop request (SIGTERM: a spot reclaim, ``docker stop``,
Batch's timeout; see :mod:`cvtrain.stop`): what was kept is said in one line, and the exit
code :data:`EXIT_TERMINATED` tells a scheduler to try again (AWS Batch retries on it).
Ctrl-C (SIGINT) stops a run at once, wherever it is (checkpoints are replaced atomically,
so the last one stands): :class:`RunInterrupted` says in one line what was kept and how to
resume, and exits :data:`EXIT_INTERRUPTED`. :class:`Kept` follows a run's checkpoints to
say that line."""

from __future__ import annotations

from cvtrain import runs
from cvtrain.errors import EXIT_INTERRUPTED, CvtrainError
from cvtrain.training import checkpoint
from cvtrain.training.checkpoint import EXIT_TERMINATED


class RunTerminated(CvtrainError):
    """A run stopped at a safe point on request; rerun with the same id to continue."""

    exit_code = EXIT_TERMINATED


class RunInterrupted(CvtrainError):
    """A run interrupted by Ctrl-C; the message says what was kept and how to resume."""

    exit_code = EXIT_INTERRUPTED


class Kept:
    """What a run stopped now would leave behind, said in one line."""

    def __init__(self, run: runs.RunFolder, rerun: str | None = None):
        self.run = run
        self.rerun = rerun
        self.remote: str | None = None
        self.state = "nothing"
        self.checkpoint_epoch = 0
        self.checkpoint_step = 0
        self.checkpoint_remote = False

    def epoch(self, epoch: int, remote: bool, step: int = 0) -> None:
        """A checkpoint after ``epoch`` epochs (and ``step`` steps of the next) is kept."""
        self.state, self.checkpoint_epoch, self.checkpoint_remote = "checkpoint", epoch, remote
        self.checkpoint_step = step

    def describe(self) -> str:
        rerun = f"rerun with --run-id {self.run.run_id}"
        if self.state == "complete":
            return (f"the run is complete in {self.run.path}, its copy in {self.remote} is "
                    f"not; {rerun} to finish the upload")
        if self.state == "checkpoint":
            where = f" (also in {self.remote})" if self.checkpoint_remote else ""
            point = checkpoint.point(self.checkpoint_epoch, self.checkpoint_step)
            return f"the checkpoint of {point} is kept{where}; {rerun} to resume"
        if self.run.path.exists():
            return f"no epoch had completed, nothing to keep; {rerun} to start it again"
        return "before the run started, nothing to keep"

    def command(self) -> str:
        """The command that continues this run, to be typed."""
        again = f"--run-id {self.run.run_id}"
        if self.rerun:
            return f"rerun with `{self.rerun} {again}`"
        return f"rerun the same command with `{again}`"

    def interrupted(self, fresh: bool) -> str:
        """The line of a run interrupted by Ctrl-C, from what is on disk now (an interrupt
        can come between a checkpoint and this object hearing of it). A new run with no
        checkpoint yet is removed: nothing in it could be resumed."""
        path = self.run.path
        if not path.is_dir():
            return "interrupted before the run started; nothing to keep"
        if self.run.is_complete():
            if self.state == "complete" and self.remote:
                return (f"interrupted; the run is complete in {path}, its copy in "
                        f"{self.remote} is not; {self.command()} to finish the upload")
            return f"interrupted; the run is complete in {path}"
        checkpoint.recover(path)
        saved = checkpoint.read(path)
        if saved is None:
            if fresh:
                self.run.discard()
                return ("interrupted before the first epoch completed; nothing kept (the run "
                        "folder is removed)")
            return f"interrupted; no checkpoint in {path}; {self.command()} to start it again"
        where = (f" (also in {self.remote})" if self.checkpoint_remote
                 and (self.checkpoint_epoch, self.checkpoint_step) == (saved.epoch, saved.step)
                 else "")
        done = " (training done)" if saved.finished else ""
        return (f"interrupted; checkpoint kept at {saved.describe()}{done} in {path}{where}; "
                f"{self.command()} to {'finish' if saved.finished else 'resume'}")
