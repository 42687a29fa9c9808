"""Running commands in the kolla_deployer container, to completion.

The container is one-shot (``docker run --rm``) and named, so a second kpc Kolla run while one
is in progress is refused by Docker instead of racing it. Output is streamed line by line
through ``drivers.process``. The container runs under an init (``--init``) so the signal
the client passes on when kpc is interrupted reaches kolla-ansible; if the container
outlives the client anyway, it is stopped and removed. The docker client argv comes from
the Docker driver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance.drivers import process
from appliance.drivers.docker import Docker, Mount, translate
from appliance.errors import CommandFailed, DockerError

log = logging.getLogger(__name__)
DOCKER_RUN_FAILED = 125  # docker run's own exit code when the container could not start


class DeployerBusy(DockerError):
    """Another kpc Kolla run holds the deployer container name."""


@dataclass(frozen=True)
class Call:
    """One command in a fresh deployer container."""

    image: str
    name: str
    argv: tuple[str, ...]
    mounts: tuple[Mount, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    network: str | None = "host"
    workdir: str = "/etc/kolla"


def run_argv(call: Call) -> list[str]:
    """``docker run`` arguments (after the client prefix) for ``call``. Pure."""
    argv = ["run", "--rm", "--init", "--name", call.name, "--workdir", call.workdir]
    argv += ["--pull", "never"]
    if call.network:
        argv += ["--network", call.network]
    for mount in call.mounts:
        argv += ["--volume", mount.volume_arg()]
    for key, value in call.env:
        argv += ["--env", f"{key}={value}"]
    return [*argv, call.image, *call.argv]


def _start_error(lines: Sequence[str], call: Call, docker: Docker) -> DockerError:
    text = "\n".join(lines[-10:])
    if "is already in use by container" in text:
        return DeployerBusy(
            f"another Kolla run is in progress (container {call.name} exists)",
            hint=f"wait for it to finish; if none is running, remove it: docker rm -f {call.name}",
        )
    return translate(text, f"starting the deployer container from {call.image}", docker.where)


def stream(docker: Docker, call: Call, on_line: Callable[[str], None]) -> int:
    """Run ``call``, passing each output line to ``on_line``; return the command's exit code."""
    argv = [*docker.docker_cmd(), *run_argv(call)]
    seen: list[str] = []
    left = docker.container(call.name)
    if left is not None and not left.running and not left.restarting:
        # a run killed outright (kpc itself killed) left its stopped container behind
        log.info("removing %s, left over from an interrupted run", call.name)
        docker.remove(call.name, timeout=5)

    def keep(line: str) -> None:
        seen.append(line)
        del seen[:-20]
        on_line(line)

    try:
        code = process.stream(argv, keep, check=False)
    except BaseException:
        # Interrupted: nothing may go on deploying behind the operator's back.
        docker.remove(call.name, timeout=5)
        raise
    if code == DOCKER_RUN_FAILED and not any(line.startswith(("PLAY", "TASK")) for line in seen):
        raise _start_error(seen, call, docker)
    return code


def output(docker: Docker, call: Call, *, timeout: float = 300) -> str:
    """Run ``call`` and return its standard output; DockerError/CommandFailed on failure."""
    argv = [*docker.docker_cmd(), *run_argv(call)]
    try:
        return process.run(argv, timeout=timeout).stdout
    except CommandFailed as exc:
        if exc.returncode == DOCKER_RUN_FAILED:
            raise _start_error(exc.output.splitlines(), call, docker) from None
        raise
