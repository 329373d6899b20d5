"""Errors the CLI turns into one line on stderr and an exit code, never a traceback."""

# Exit code of a command stopped on request (SIGTERM) at a safe point, after keeping what
# it could (EX_TEMPFAIL: "try again"): rerunning it continues; AWS Batch retries on it.
EXIT_TERMINATED = 75
# Exit code of a command interrupted by Ctrl-C (SIGINT), as shells report it (128 + 2)
EXIT_INTERRUPTED = 130


class CvtrainError(Exception):
    """A problem the user can fix; ``str(err)`` is the whole message, one line."""

    exit_code = 1


class UsageError(CvtrainError):
    """Bad input: a job file, an option, a path that is not what was expected."""

    exit_code = 2


class DataError(CvtrainError):
    """A dataset that is missing, corrupt, unsafe or cannot be fetched."""

    exit_code = 3


class StorageError(CvtrainError):
    """A storage location (local folder or ``s3://bucket/prefix``) that cannot be read or
    written: no such bucket or key, access denied, endpoint unreachable, unsafe key."""

    exit_code = 4


class CloudError(CvtrainError):
    """A cloud service that cannot be used as asked: credentials, region, a queue, an image
    or a job that does not exist or is not ready, an API call that failed."""

    exit_code = 5


def typed_set(assignment: str, dataset: str | None = None) -> str:
    """The fix ``--set KEY=VALUE`` as the user would type it, in backquotes: on the command
    line, or through the make target that ran cvtrain (the Makefile names it in
    ``$CVTRAIN_MAKE``) as its ``ARGS``. In ``make reproduce`` (a set of jobs of several
    datasets) the key is qualified with ``dataset``, so that only its jobs take it."""
    import os

    target = os.environ.get("CVTRAIN_MAKE")
    if not target:
        return f"`--set {assignment}`"
    if target.startswith("reproduce") and dataset:
        assignment = f"{dataset}:{assignment}"
    return f"`make {target} ARGS='--set {assignment}'`"


#: what a user without the real data can type to try cvtrain on synthetic data
DEMO_HINT = "`make demo` trains on synthetic data offline"
