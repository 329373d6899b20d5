"""Stop requests: SIGTERM (a spot reclaim, ``docker stop``, Batch's timeout) is recorded the
moment it arrives and acted on at the next safe point, never in the middle of an object.

:func:`install` is called once at process start (the CLI's first line of work), so a
signal is never lost, whatever is being imported or loaded. The handler only records the
request; the code that owns a safe point asks :func:`requested` or calls :func:`check`:
between training steps (a callback), between objects of a transfer, between the steps of
finishing a run. Waits that should end early use :func:`sleep`.
"""

from __future__ import annotations

import contextlib
import signal
import threading

_event = threading.Event()
_signal_name: list[str] = []


class StopRequested(Exception):
    """A stop was requested and this is a safe point: unwind, keep what can be kept."""

    def __init__(self, where: str = ""):
        super().__init__(where or "stop requested")
        self.where = where


_forwards: list = []


def _handler(signum, frame) -> None:
    if not _signal_name:
        _signal_name.append(signal.Signals(signum).name)
    _event.set()
    for forward in list(_forwards):
        try:
            forward(signum)
        except Exception:  # a child that is gone already: nothing to tell
            pass


@contextlib.contextmanager
def forwarding(process):
    """While a child ``process`` (``subprocess.Popen``) does the work, a signal is passed
    on to it (``docker run`` hands it to the container), which then stops at its own safe
    point; the caller waits for it as usual."""
    def forward(signum):
        if process.poll() is None:
            process.send_signal(signum)

    _forwards.append(forward)
    try:
        if requested():  # it came before the child was started
            forward(signal.SIGTERM)
        yield
    finally:
        _forwards.remove(forward)


_interrupted = threading.Event()


def _interrupt(signum, frame) -> None:
    """Ctrl-C: raise KeyboardInterrupt at once, as Python's own handler does, and remember
    it, so that one that code in between swallows (a finaliser, a C extension clearing the
    pending error) is raised again at the next safe point (:func:`check`)."""
    _interrupted.set()
    raise KeyboardInterrupt


def install() -> None:
    """Record SIGTERM from now on, and Ctrl-C unless it is ignored (a background job);
    main thread only, elsewhere a no-op."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _handler)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _interrupt)


def installed() -> bool:
    return signal.getsignal(signal.SIGTERM) is _handler


def request(name: str = "SIGTERM") -> None:
    """Ask for a stop as the signal would (tests; a watcher of a spot notice)."""
    if not _signal_name:
        _signal_name.append(name)
    _event.set()


_deferrals = [0]
_lock = threading.Lock()


def requested() -> bool:
    """A stop was requested and no :func:`deferred` block is running."""
    return _event.is_set() and not _deferrals[0]


@contextlib.contextmanager
def deferred():
    """A unit that must not be cut (a checkpoint and its upload): while it runs,
    :func:`requested` says no, in every thread (uploads run in a pool); the request is kept
    and seen at the first check after the block."""
    with _lock:
        _deferrals[0] += 1
    try:
        yield
    finally:
        with _lock:
            _deferrals[0] -= 1


def signal_name() -> str:
    return _signal_name[0] if _signal_name else "SIGTERM"


def check(where: str = "") -> None:
    """Raise :class:`StopRequested` if a stop was requested (outside :func:`deferred`), and
    in the main thread KeyboardInterrupt for a Ctrl-C that was swallowed on its way."""
    if _interrupted.is_set() and threading.current_thread() is threading.main_thread():
        _interrupted.clear()
        raise KeyboardInterrupt
    if requested():
        raise StopRequested(where)


def sleep(seconds: float) -> bool:
    """Wait up to ``seconds``; True when a stop was requested (at once if it already was;
    inside :func:`deferred` the full wait, then False)."""
    if _deferrals[0]:
        import time

        time.sleep(seconds)
        return False
    return _event.wait(seconds) and requested()


def reset() -> None:
    """Forget a request (tests that run several jobs in one process)."""
    _event.clear()
    _interrupted.clear()
    _signal_name.clear()
