"""Finding job files: by path, or by name under the jobs folder."""

from __future__ import annotations

from pathlib import Path

from cvtrain.errors import UsageError
from cvtrain.paths import jobs_dir


def job_files(root: Path | None = None) -> list[Path]:
    """Every ``*.yaml``/``*.yml`` below ``root`` (default: the jobs folder), sorted."""
    root = Path(root) if root is not None else jobs_dir()
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise UsageError(f"{root}: no such jobs folder")
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def find_job(ref: str) -> Path:
    """A job file from a path (``jobs/cifar/basenet.yaml``), a path under the jobs folder
    (``cifar/basenet``) or a unique file stem (``basenet``)."""
    path = Path(ref)
    if path.is_file():
        return path
    root = jobs_dir()
    for candidate in (root / ref, root / f"{ref}.yaml", root / f"{ref}.yml"):
        if candidate.is_file():
            return candidate
    if root.is_dir() and "/" not in ref:
        matches = [p for p in job_files(root) if p.stem == ref]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(str(m) for m in matches)
            raise UsageError(f"{ref}: ambiguous job name; matches {names}")
    raise UsageError(f"{ref}: no such job file (looked for a path, and under {root}/)")
