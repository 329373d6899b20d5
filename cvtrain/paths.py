"""Where cvtrain keeps things on this machine, in one place. Each location is read from the
environment when asked for, so a test or a container can move it; none is created here
(whoever writes to a location creates it).

================  ===============================================  ===========================
location          default                                          override
================  ===============================================  ===========================
cache             ``$XDG_CACHE_HOME/cvtrain`` or ``~/.cache/cvtrain``  ``$CVTRAIN_CACHE``
                  (downloads, extracted archives, features, s3
                  pulls)
state             ``$XDG_STATE_HOME/cvtrain`` or                   ``$CVTRAIN_STATE_DIR``
                  ``~/.local/state/cvtrain`` (jobs submitted from
                  here)
runs              ``./runs`` (run folders of ``cvtrain run``)      ``$CVTRAIN_RUNS``
jobs              ``./jobs`` (job files found by name)             ``$CVTRAIN_JOBS``
================  ===============================================  ===========================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$CVTRAIN_CACHE``, else ``$XDG_CACHE_HOME/cvtrain``, else ``~/.cache/cvtrain``."""
    env = os.environ if env is None else env
    if explicit := env.get("CVTRAIN_CACHE"):
        return Path(explicit).expanduser()
    if xdg := env.get("XDG_CACHE_HOME"):
        return Path(xdg).expanduser() / "cvtrain"
    return Path.home() / ".cache" / "cvtrain"


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$CVTRAIN_STATE_DIR``, else ``$XDG_STATE_HOME/cvtrain``, else
    ``~/.local/state/cvtrain``."""
    env = os.environ if env is None else env
    if explicit := env.get("CVTRAIN_STATE_DIR"):
        return Path(explicit).expanduser()
    base = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "cvtrain"


def default_out_dir() -> Path:
    """Where ``cvtrain run`` writes run folders: ``$CVTRAIN_RUNS``, else ``./runs``."""
    return Path(os.environ.get("CVTRAIN_RUNS", "runs"))


def jobs_dir() -> Path:
    """Where job files are looked up by name: ``$CVTRAIN_JOBS``, else ``./jobs``."""
    return Path(os.environ.get("CVTRAIN_JOBS", "jobs"))
