"""The AWS configuration a ``--runner docker`` run takes into its container when a
profile is used: the host's ``~/.aws``, read-only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cvtrain.runners.docker import C_AWS, C_HOME, Mount


def aws_profile_mounts(environ: Mapping[str, str], set_env: dict[str, str]) -> list[Mount]:
    """A profile's files, read-only: the whole host ``~/.aws`` as the container's
    ``~/.aws`` (HOME is C_HOME), so SSO and assume-role caches (``sso/cache``,
    ``cli/cache``) work as on the host, plus a config or credentials file that
    ``AWS_CONFIG_FILE`` / ``AWS_SHARED_CREDENTIALS_FILE`` put elsewhere; the container's
    variables naming them go into ``set_env``."""
    mounts = []
    aws = Path(environ.get("HOME") or Path.home()) / ".aws"
    if aws.is_dir():
        mounts.append(Mount(aws.resolve(), f"{C_HOME}/.aws", readonly=True))
    for var, name in (("AWS_CONFIG_FILE", "config"),
                      ("AWS_SHARED_CREDENTIALS_FILE", "credentials")):
        custom = environ.get(var)
        host = Path(custom).expanduser() if custom else aws / name
        if not host.is_file():
            continue
        if custom and not host.resolve().is_relative_to(aws.resolve()):
            target = f"{C_AWS}/{name}"
            mounts.append(Mount(host.resolve(), target, readonly=True))
        else:
            target = f"{C_HOME}/.aws/{host.resolve().relative_to(aws.resolve())}"
        set_env[var] = target
    return mounts
