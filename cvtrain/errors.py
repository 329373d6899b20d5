"""Errors the CLI turns into one line on stderr and an exit code, never a traceback."""


class CvtrainError(Exception):
    """A problem the user can fix; ``str(err)`` is the whole message, one line."""

    exit_code = 1


class UsageError(CvtrainError):
    """Bad input: a job file, an option, a path that is not what was expected."""

    exit_code = 2


class DataError(CvtrainError):
    """A dataset that is missing, corrupt, unsafe or cannot be fetched."""

    exit_code = 3
