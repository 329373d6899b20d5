"""Finding job files: by path, or by name under the jobs folder."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from cvtrain.errors import UsageError
from cvtrain.paths import jobs_dir


def jobs_hint() -> str:
    """Said when the jobs folder is missing or empty (typically: run outside the checkout)."""
    if os.environ.get("CVTRAIN_JOBS"):
        return "$CVTRAIN_JOBS should name the folder of job files, e.g. /path/to/cvtrain/jobs"
    return ("run from the cvtrain checkout, or set $CVTRAIN_JOBS to its jobs folder, e.g. "
            "export CVTRAIN_JOBS=/path/to/cvtrain/jobs")


def _where(root: Path) -> str:
    return f"{root} ($CVTRAIN_JOBS)" if os.environ.get("CVTRAIN_JOBS") else str(root)


def job_files(root: Path | None = None) -> list[Path]:
    """Every ``*.yaml``/``*.yml`` below ``root`` (default: the jobs folder), sorted."""
    default = root is None
    root = Path(root) if root is not None else jobs_dir()
    if root.is_file():
        return [root]
    if not root.is_dir():
        hint = f"; {jobs_hint()}" if default else ""
        raise UsageError(f"{_where(root) if default else root}: no such jobs folder{hint}")
    return sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def _head(path: Path) -> tuple[Path | None, str]:
    """The job file ``path`` extends (resolved; None: none) and its description, as
    written in it; an unreadable file extends nothing."""
    from cvtrain.spec.load import SpecError, _read_yaml

    try:
        doc = _read_yaml(path)
    except SpecError:
        return None, ""
    parent, text = doc.get("extends"), doc.get("description")
    return ((path.parent / parent).resolve() if isinstance(parent, str) and parent else None,
            text if isinstance(text, str) else "")


def in_steps_order(paths: list[Path]) -> list[Path]:
    """``paths`` ordered as the experiments build on each other through ``extends``: each
    job right after the one it extends, the longest chain of improvements first (basenet,
    normalize, augment, ... earlystop, then bonus, which branches off normalize); jobs
    that branch off the same parent, and unrelated chains, by their description (the
    report's part numbers; those without one of their own after those with one), then
    file name."""
    real = {p.resolve(): p for p in paths}
    head = {path: _head(path) for path in real}
    children: dict[Path | None, list[Path]] = {}
    for path, (parent, _) in head.items():
        children.setdefault(parent if parent in real else None, []).append(path)
    height: dict[Path, int] = {}

    def measure(path: Path, seen: frozenset = frozenset()) -> int:
        if path not in height:
            below = [c for c in children.get(path, []) if c not in seen]
            height[path] = 1 + max((measure(c, seen | {path}) for c in below), default=0)
        return height[path]

    def key(path: Path):
        return (-measure(path), not head[path][1], head[path][1], path.name)

    ordered: list[Path] = []

    def visit(path: Path) -> None:
        if path in ordered:
            return
        ordered.append(path)
        for child in sorted(children.get(path, []), key=key):
            visit(child)

    for root in sorted(children.get(None, []), key=key):
        visit(root)
    for path in sorted(real, key=key):  # in a cycle of extends: listed all the same
        visit(path)
    return [real[p] for p in ordered]


def complete_job(incomplete: str) -> list[str]:
    """Shell completion for a job argument: the names under the jobs folder that start
    with what was typed (files and folders complete as the shell's own)."""
    try:
        names = {p.stem for p in job_files()}
    except UsageError:
        return []
    return sorted(n for n in names if n.startswith(incomplete))


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
    if not root.is_dir():
        raise UsageError(f"{ref}: no such job file, and no jobs folder to look in "
                         f"({_where(root)}/ does not exist); {jobs_hint()}")
    files = job_files(root)
    if "/" in ref:
        known = {p.relative_to(root).with_suffix("").as_posix() for p in files}
    else:
        known = {p.stem for p in files}
    close = difflib.get_close_matches(ref.removesuffix(".yaml").removesuffix(".yml"),
                                      sorted(known), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise UsageError(f"{ref}: no such job file (looked for a path, and under "
                     f"{_where(root)}/){hint}")
