"""The ``docker run`` argument list, built from a plan and nothing else (pure, so it is
tested without an engine)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cvtrain.errors import UsageError

DEFAULT_NETWORK = "host"


@dataclass(frozen=True)
class Mount:
    """A bind mount: host ``source`` at container ``target``."""

    source: Path
    target: str
    readonly: bool = False

    def arg(self) -> str:
        """The ``--mount`` value. Docker parses it as one CSV record, so a field holding a
        comma or a quote is quoted CSV-style (``"source=/a,b"``)."""
        fields = ["type=bind", f"source={self.source}", f"target={self.target}"]
        if self.readonly:
            fields.append("readonly")
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(fields)
        return buf.getvalue()


def gpu_args(gpus: str | None) -> list[str]:
    """``--gpus`` for docker: ``all`` -> all; ``N`` -> the first N devices
    (``"device=0,1"``, quoted because docker reads the value as CSV); ``0,2`` or
    ``device=0,2`` -> those devices; ``none`` -> no flag."""
    value = (gpus or "none").strip()
    if value.lower() == "none":
        return []
    if value.lower() == "all":
        return ["--gpus", "all"]
    if value.isdigit():
        count = int(value)
        if count == 0:
            raise UsageError("--gpus 0: use --gpus none for a CPU-only container")
        devices = [str(i) for i in range(count)]
    else:
        spec = value.strip('"').removeprefix("device=")
        devices = [d.strip() for d in spec.split(",")]
        if not all(re.fullmatch(r"[0-9]+|GPU-[0-9A-Fa-f-]+|MIG-[0-9A-Za-z/-]+", d)
                   for d in devices):
            raise UsageError(f"--gpus {gpus}: expected all, none, a count N, or device "
                             "indices such as 0,2")
    return ["--gpus", f'"device={",".join(devices)}"']


def build_run_argv(*, image: str, args: Sequence[str], mounts: Sequence[Mount] = (),
                   pass_env: Sequence[str] = (), set_env: Mapping[str, str] | None = None,
                   user: str | None = None, gpus: str | None = None,
                   network: str | None = DEFAULT_NETWORK, name: str | None = None,
                   labels: Mapping[str, str] | None = None, docker: str = "docker") -> list[str]:
    """The ``docker run`` argument list; pure.

    ``pass_env`` names are passed as ``-e NAME`` (docker copies the value from its own
    environment); ``set_env`` values are container paths and settings, never secrets.
    ``args`` follow the image name: the entrypoint is ``cvtrain``, so they start with
    ``run``.
    """
    # --init: docker's tini as PID 1 forwards signals and reaps children (Python as PID 1
    # would do neither for processes it did not start itself)
    argv = [docker, "run", "--rm", "--init", "--pull", "never"]
    if name:
        argv += ["--name", name]
    for key, value in (labels or {}).items():
        argv += ["--label", f"{key}={value}"]
    if user:
        argv += ["--user", user]
    if network:
        argv += ["--network", network]
    argv += gpu_args(gpus)
    for mount in mounts:
        argv += ["--mount", mount.arg()]
    for key, value in (set_env or {}).items():
        argv += ["-e", f"{key}={value}"]
    for key in pass_env:
        argv += ["-e", key]
    return [*argv, image, *args]


__all__ = ["DEFAULT_NETWORK", "Mount", "build_run_argv", "gpu_args"]
