"""Safe unpickling of the python edition's files.

``train``, ``test`` and ``meta`` are Python-2 protocol-2 pickles, and a pickle can run any
global it names. They are only ever read with :class:`RestrictedUnpickler`, which resolves
nothing but the few numpy globals (and latin-1 ``_codecs.encode``) these files need.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
from collections.abc import Callable
from typing import Any, BinaryIO

import numpy as np

from cvtrain.data.errors import _error, _one_line, _reason
from cvtrain.errors import DataError

#: The only globals :class:`RestrictedUnpickler` resolves, as ``module.name``.
ALLOWED_GLOBALS: frozenset[str] = frozenset(
    {
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.ndarray",
        "numpy.dtype",
        "_codecs.encode",
    }
)
_LATIN1_NAMES = frozenset({"latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"})


def _numpy_reconstruct() -> Callable[..., Any]:
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2 without the numpy._core alias
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


def _python3_name(module: str, name: str) -> str:
    """What a Python 2 global name means in Python 3 (e.g. ``__builtin__.eval``)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only :data:`ALLOWED_GLOBALS`.

    Any other global (``os.system``, ``builtins.eval``, ...) raises :class:`DataError`
    before it can be called. ``_codecs.encode`` (how Python 3 writes bytes at protocol 2)
    is further limited to latin-1 on a str.
    """

    def __init__(self, file: BinaryIO, *, source: str = "<pickle>", encoding: str = "bytes"):
        super().__init__(file, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        if qualified in (
            "numpy.core.multiarray._reconstruct",
            "numpy._core.multiarray._reconstruct",
        ):
            return _numpy_reconstruct()
        if qualified == "numpy.ndarray":
            return np.ndarray
        if qualified == "numpy.dtype":
            return np.dtype
        if qualified == "_codecs.encode":
            return self._latin1_encode
        shown = _one_line(qualified, 120)
        modern = _python3_name(module, name)
        if modern != qualified:
            shown += f" (Python 3: {_one_line(modern, 120)})"
        raise _error(
            f"refused to unpickle global {shown} in {self.source}: "
            f"CIFAR-100 pickles only need {', '.join(sorted(ALLOWED_GLOBALS))}"
        )

    def _latin1_encode(self, obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if (
            not isinstance(obj, str)
            or not isinstance(encoding, str)
            or encoding.lower() not in _LATIN1_NAMES
            or errors != "strict"
        ):
            raise _error(
                f"refused to unpickle a call of _codecs.encode with encoding {encoding!r:.40} "
                f"in {self.source}: expected latin1-encoded bytes"
            )
        return obj.encode("latin-1")


def safe_unpickle(data: bytes, source: str) -> Any:
    """Unpickle ``data`` (a Python-2 or 3 pickle) with :class:`RestrictedUnpickler`.

    ``source`` names the file in error messages. Every failure is a :class:`DataError`.
    """
    try:
        return RestrictedUnpickler(io.BytesIO(data), source=source).load()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of untrusted data is a DataError
        raise _error(
            f"{source} is not a readable CIFAR-100 pickle (expected a protocol-2 pickle of a "
            f"dict): {_reason(exc)}"
        ) from exc
