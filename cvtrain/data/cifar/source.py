"""Finding and reading CIFAR-100: :func:`load_cifar100`.

A source is an archive of either edition (streamed once, never extracted to disk, hashed as
it is read), an extracted ``cifar-100-binary/`` or ``cifar-100-python/`` folder, a folder
holding one of those, or, when no path is given, the archive in the cache (downloaded if
missing, see :mod:`cvtrain.data.cifar.download`).
"""

from __future__ import annotations

import hashlib
import tarfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np

from cvtrain.data.cifar.download import LOCAL_COPY, _from_cache
from cvtrain.data.cifar.format import ARCHIVE_NAMES, DATA_FILES, EDITIONS, FOLDER_NAMES
from cvtrain.data.cifar.labels import NUM_FINE
from cvtrain.data.cifar.records import ImageData, _build, _Files
from cvtrain.data.errors import _error, _reason
from cvtrain.data.synthetic import MARKER, is_marker, marked
from cvtrain.errors import DataError, UsageError

_ARCHIVE_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, ValueError)


def _check_load_args(num_classes: Any, edition: Any) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
        raise UsageError(f"num_classes must be an integer 1..{NUM_FINE}, got {num_classes!r}")
    if not 1 <= int(num_classes) <= NUM_FINE:
        raise UsageError(f"num_classes must be in 1..{NUM_FINE}, got {num_classes}")
    if edition not in ("auto", *EDITIONS):
        raise UsageError(f"edition must be 'auto', 'binary' or 'python', got {edition!r}")


# --------------------------------------------------------------------------- reading sources


class _HashingReader:
    """A read-only file wrapper that hashes everything read through it."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        self.hash.update(chunk)
        return chunk

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


def _safe_member_path(name: str) -> PurePosixPath | None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        return None
    return path


def _expected_members() -> str:
    return " or ".join(f"{FOLDER_NAMES[ed]}/{{{','.join(DATA_FILES[ed])}}}" for ed in EDITIONS)


def _read_archive(archive: Path, edition: str) -> tuple[str, _Files, str, bool]:
    """Stream the archive once: returns (edition found, files, sha256 of the archive,
    whether it carries the synthetic marker)."""
    wanted = {name for names in DATA_FILES.values() for name in names} | {MARKER}
    groups: dict[str, _Files] = {}
    seen: list[str] = []
    try:
        with archive.open("rb") as raw:
            reader = _HashingReader(raw)
            with tarfile.open(fileobj=reader, mode="r|*", bufsize=1 << 20) as tar:
                for member in tar:
                    if len(seen) < 6:
                        seen.append(member.name)
                    path = _safe_member_path(member.name)
                    # Never extracted to disk; unsafe names, links and devices are ignored.
                    if path is None or not member.isfile() or path.name not in wanted:
                        continue
                    handle = tar.extractfile(member)
                    data = handle.read() if handle is not None else b""
                    if len(data) != member.size:
                        raise _error(
                            f"{archive}:{member.name} is truncated: read {len(data):,} of "
                            f"{member.size:,} bytes"
                        )
                    group = groups.setdefault(str(path.parent), {})
                    group[path.name] = (f"{archive}:{member.name}", data)
            reader.drain()
    except DataError:
        raise
    except _ARCHIVE_ERRORS as exc:
        raise _error(
            f"{archive} is not a readable CIFAR-100 archive (expected {ARCHIVE_NAMES['binary']} "
            f"or {ARCHIVE_NAMES['python']}, a tar.gz): {_reason(exc)}"
        ) from exc

    synthetic = any(is_marker(files[MARKER][1]) for files in groups.values()
                    if MARKER in files)
    complete = {
        ed: files
        for ed in EDITIONS
        for _, files in sorted(groups.items())
        if all(name in files for name in DATA_FILES[ed])
    }
    order = EDITIONS if edition == "auto" else (edition,)
    for ed in order:
        if ed in complete:
            files = {name: complete[ed][name] for name in DATA_FILES[ed]}
            return ed, files, reader.hash.hexdigest(), synthetic
    if complete:
        other = next(iter(complete))
        raise _error(
            f"{archive} holds the {other} edition of CIFAR-100, but edition {edition!r} was "
            f"asked for; expected {ARCHIVE_NAMES[edition]} (members "
            f"{FOLDER_NAMES[edition]}/{{{','.join(DATA_FILES[edition])}}})"
        )
    found = ", ".join(seen) + (", ..." if len(seen) == 6 else "") if seen else "nothing"
    raise _error(
        f"{archive} is not a CIFAR-100 archive: expected members {_expected_members()}, "
        f"found {found}"
    )


def _read_folder(folder: Path, edition: str) -> tuple[str, _Files, str, bool]:
    files: _Files = {}
    lines = []
    for name in sorted(DATA_FILES[edition]):
        path = folder / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise _error(
                f"cannot read {path} (part of the extracted {edition} edition of CIFAR-100): "
                f"{_reason(exc)}"
            ) from exc
        files[name] = (str(path), data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    digest = hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()
    return edition, files, digest, marked(folder)


def _folder_editions(folder: Path) -> list[str]:
    """Editions whose extracted files are (at least partly) right inside ``folder``."""
    found = []
    if (folder / "train.bin").is_file() or (folder / "test.bin").is_file():
        found.append("binary")
    if (folder / "meta").is_file() or (
        (folder / "train").is_file() and (folder / "test").is_file()
    ):
        found.append("python")
    return found


def _candidates(folder: Path) -> list[tuple[str, Path, str]]:
    """(edition, path, kind) for everything CIFAR-100-like in ``folder``, preferred first."""
    out: list[tuple[str, Path, str]] = []
    inside = _folder_editions(folder)
    for ed in EDITIONS:
        if ed in inside:
            out.append((ed, folder, "folder"))
        sub = folder / FOLDER_NAMES[ed]
        if sub.is_dir() and ed in _folder_editions(sub):
            out.append((ed, sub, "folder"))
        archive = folder / ARCHIVE_NAMES[ed]
        if archive.is_file():
            out.append((ed, archive, "archive"))
    return out


def _missing(folder: Path, edition: str) -> list[str]:
    return [name for name in DATA_FILES[edition] if not (folder / name).is_file()]


def _resolve_folder(folder: Path, edition: str) -> tuple[Path, str, str]:
    """Pick what to read in ``folder``: (path, "folder" | "archive", edition)."""
    found = _candidates(folder)
    order = EDITIONS if edition == "auto" else (edition,)
    incomplete = None
    for ed in order:
        for cand_ed, path, kind in found:
            if cand_ed != ed:
                continue
            if kind == "archive" or not _missing(path, ed):
                return path, kind, ed
            incomplete = incomplete or (ed, path)
    if incomplete is not None:
        ed, path = incomplete
        raise _error(
            f"{path} looks like an extracted {ed} edition of CIFAR-100 but lacks "
            f"{', '.join(_missing(path, ed))}; expected {', '.join(DATA_FILES[ed])}"
        )
    if found:
        others = ", ".join(str(path) for _, path, _ in found)
        raise _error(
            f"{folder} holds only the {found[0][0]} edition of CIFAR-100 ({others}), but edition "
            f"{edition!r} was asked for; expected {ARCHIVE_NAMES[edition]} or an extracted "
            f"{FOLDER_NAMES[edition]}/ folder in {folder}"
        )
    expected = ", ".join(
        f"{ARCHIVE_NAMES[ed]}, {FOLDER_NAMES[ed]}/ or {', '.join(DATA_FILES[ed])}" for ed in order
    )
    raise _error(f"no CIFAR-100 data in {folder}: expected {expected}")


# --------------------------------------------------------------------------- loading


def load_cifar100(
    path: str | Path | None,
    num_classes: int = 25,
    edition: str = "auto",
    *,
    download: bool = True,
    progress: bool = True,
) -> ImageData:
    """Load CIFAR-100, keeping fine labels ``0..num_classes-1`` in file order.

    ``path`` is an archive of either edition, an extracted ``cifar-100-binary/`` or
    ``cifar-100-python/`` folder, or a folder holding one of those; ``None`` means the
    archive in :func:`cvtrain.paths.cache_dir`, downloaded (MD5-checked) if missing and
    ``download``.
    ``edition`` is ``"auto"`` (binary preferred), ``"binary"`` or ``"python"``.
    """
    _check_load_args(num_classes, edition)
    num_classes = int(num_classes)
    try:
        source, kind, edition = _locate(path, edition, download, progress)
    except OSError as exc:  # e.g. a folder we may not list
        raise _error(f"cannot look for CIFAR-100 in {path}: {_reason(exc)}") from exc
    if kind == "archive":
        found, files, digest, synthetic = _read_archive(source, edition)
    else:
        found, files, digest, synthetic = _read_folder(source, edition)
    data = _build(files, found, num_classes, source, digest)
    data.synthetic = synthetic
    return data


def _locate(
    path: str | Path | None, edition: str, download: bool, progress: bool
) -> tuple[Path, str, str]:
    """(source, "archive" | "folder", edition to read it as)."""
    if path is None:
        source, kind = _from_cache(edition, download, progress), "archive"
    else:
        given = Path(path).expanduser()
        if given.is_file():
            source, kind = given, "archive"
        elif given.is_dir():
            source, kind, found_edition = _resolve_folder(given, edition)
            if kind == "folder":
                edition = found_edition  # an archive's members decide, whatever its name
        elif given.exists():
            raise _error(f"{given} is neither a CIFAR-100 archive nor a folder")
        else:
            raise _error(
                f"{given} does not exist; expected a CIFAR-100 archive ({ARCHIVE_NAMES['binary']} "
                f"or {ARCHIVE_NAMES['python']}), an extracted folder, or a folder holding one: "
                f"{LOCAL_COPY}"
            )
    return source.absolute(), kind, edition
