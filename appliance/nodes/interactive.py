"""The argv of an interactive ``ssh`` to one node, checked strictly against kpc's keys."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from appliance.drivers.ssh import HostKey, key_algorithms, known_hosts_options
from appliance.nodes.access import SshSettings


def known_hosts_path(state_dir: Path) -> Path:
    """Where kpc writes the known_hosts file generated from the registry."""
    return state_dir / "ssh" / "known_hosts"


def ssh_argv(
    address: str,
    settings: SshSettings,
    host_key: HostKey,
    known_hosts: Path,
    command: Sequence[str] = (),
) -> list[str]:
    """``ssh`` with kpc's user, port, key and known_hosts; host key checking strict."""
    argv = ["ssh", "-p", str(settings.port), "-l", settings.user]
    if settings.key_file is not None:  # otherwise ssh picks its defaults and the agent
        argv += ["-i", str(settings.key_file)]
        if not settings.credentials.agent_socket:
            argv += ["-o", "IdentitiesOnly=yes"]
    argv += known_hosts_options(known_hosts, key_algorithms(host_key.type))
    argv += ["-o", f"ConnectTimeout={max(1, round(settings.timeout))}"]
    # "--" ends ssh's options: words of the remote command are never taken for its own.
    return [*argv, "--", address, *command]
