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


def test_a_ctrl_c_swallowed_on_its_way_is_raised_again_at_the_next_check():
    # (a KeyboardInterrupt raised inside a finaliser or cleared by a C extension is lost;
    # a run would then go on to its end and exit 0)
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stop.install()
    try:
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        with pytest.raises(KeyboardInterrupt):  # at once, as Python's own handler does
            signal.raise_signal(signal.SIGINT)
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass  # swallowed
        with pytest.raises(KeyboardInterrupt):
            stop.check()
        stop.check()  # once
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job ignores Ctrl-C
        stop.install()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_child_started_after_the_request_gets_it_at_once():
    stop.request()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with stop.forwarding(child):
        assert child.wait(timeout=30) == -signal.SIGTERM
