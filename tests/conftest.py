"""Shared fixtures. TensorFlow is quietened before any test imports it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent
JOBS = ROOT / "jobs"


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run ``python -m cvtrain ARGS`` in a subprocess, as a user would."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", "cvtrain", *map(str, args)], cwd=cwd or ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def write_job(tmp_path):
    """Write a YAML job file into tmp_path and return its path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return write
