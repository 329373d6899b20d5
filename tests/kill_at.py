"""Run the cvtrain CLI and signal this very process right after a chosen function returns
(its Nth call): kill points chosen exactly, where a timer could only hope to hit them.

    python tests/kill_at.py MODULE:QUALNAME[@N] SIGNAL cvtrain-args...

SIGKILL ends the process there and then (nothing runs after it); SIGTERM goes through
cvtrain's own handler, as a ``docker stop`` would.
"""

import importlib
import os
import signal
import sys


def arm(point: str, signame: str) -> None:
    target, _, nth = point.partition("@")
    module_name, _, qualname = target.partition(":")
    owner = importlib.import_module(module_name)
    *path, name = qualname.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        calls[0] += 1
        if calls[0] == int(nth or 1):
            os.kill(os.getpid(), getattr(signal, signame))
        return result

    setattr(owner, name, wrapper)


if __name__ == "__main__":
    from cvtrain import stop

    stop.install()
    arm(sys.argv[1], sys.argv[2])
    sys.argv = ["cvtrain", *sys.argv[3:]]
    from cvtrain.cli import main

    main()
