"""The installer's command line. Pure.

Default: ``flatcar-install -d DEV -C CHANNEL -V VERSION -i IGNITION [-b BASEURL]``. The
command itself is configurable (``--installer``), e.g. a wrapper script or ``coreos-install``
on a legacy host; kpc appends the same options to it.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from appliance.errors import UsageError
from appliance.install.osrelease import TargetOs

DEFAULT_INSTALLER = ("flatcar-install",)


def parse_installer(command: str | None) -> tuple[str, ...]:
    """``--installer`` text to argv words (shell quoting allowed, no shell involved)."""
    if command is None:
        return DEFAULT_INSTALLER
    try:
        words = tuple(shlex.split(command))
    except ValueError as exc:
        raise UsageError(
            f"cannot read --installer {command!r}: {exc}",
            hint="quote it like a shell command, e.g. --installer '/opt/bin/flatcar-install'",
        ) from None
    if not words:
        raise UsageError("--installer is empty", hint="leave it out to use flatcar-install")
    return words


def installer_argv(
    command: Sequence[str], device: str, target: TargetOs, ignition: Path
) -> list[str]:
    """The exact argv kpc runs to install ``target`` onto ``device``."""
    argv = [
        *command,
        "-d",
        device,
        "-C",
        target.channel,
        "-V",
        target.version,
        "-i",
        str(ignition),
    ]
    if target.baseurl:
        argv += ["-b", target.baseurl]
    return argv
