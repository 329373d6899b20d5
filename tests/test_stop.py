"""The stop-request module: a request is kept until a safe point asks for it, waits for
units that must not be cut, and reaches a child process doing the work."""

import signal
import subprocess
import sys
import time

import pytest

from cvtrain import stop


@pytest.fixture(autouse=True)
def fresh():
    stop.reset()
    yield
    stop.reset()


def test_a_request_is_seen_at_the_next_check_not_inside_a_deferred_unit():
    stop.check()  # nothing requested: no-op
    with stop.deferred():
        stop.request()
        assert not stop.requested()
        stop.check()  # the unit goes on
        assert stop.sleep(0.01) is False  # a full wait, not cut short
    assert stop.requested()
    with pytest.raises(stop.StopRequested):
        stop.check("between objects")
    t0 = time.perf_counter()
    assert stop.sleep(30) is True and time.perf_counter() - t0 < 1  # ends a wait at once


def test_the_signal_handler_records_and_forwards_to_a_child():
    previous = signal.getsignal(signal.SIGTERM)
    stop.install()
    try:
        assert stop.installed()
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with stop.forwarding(child):
            signal.raise_signal(signal.SIGTERM)  # handled: this process goes on
            assert child.wait(timeout=30) == -signal.SIGTERM
        assert stop.requested() and stop.signal_name() == "SIGTERM"
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_child_started_after_the_request_gets_it_at_once():
    stop.request()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with stop.forwarding(child):
        assert child.wait(timeout=30) == -signal.SIGTERM
