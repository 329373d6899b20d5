"""Where a result came from: cvtrain's git revision and the versions of what it ran on,
recorded in every ``metrics.json`` so a run can be trusted and repeated later."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from cvtrain import __version__


def git_revision() -> str | None:
    """cvtrain's git revision: $CVTRAIN_GIT_REVISION (set in images), else the checkout's."""
    if rev := os.environ.get("CVTRAIN_GIT_REVISION"):
        return rev
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "-uno"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def installed_version(*distributions: str) -> str | None:
    """The installed version of the first distribution found (read from its metadata: the
    package is not imported)."""
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def package_versions(backend: str) -> dict:
    import keras
    import numpy

    return {"cvtrain": __version__, "python": platform.python_version(),
            "backend": backend, "keras": keras.__version__, "numpy": numpy.__version__,
            "tensorflow": installed_version("tensorflow", "tensorflow-cpu", "tf-nightly"),
            "jax": installed_version("jax"), "jaxlib": installed_version("jaxlib")}
