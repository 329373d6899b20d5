"""Error messages of the dataset readers: each a :class:`DataError` of one line, whatever
multi-line or very long text it quotes (file contents, exception messages, a server's
reason), capped in length.
"""

from __future__ import annotations

from cvtrain.errors import DataError


def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _error(message: str) -> DataError:
    return DataError(_one_line(message, limit=1000))


def _reason(exc: BaseException) -> str:
    text = _one_line(str(exc), limit=200)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
