"""The systemd units that start kpc's service containers on the deploy host at boot.

Built from the same specs as ``kpc up`` (``spec.service_specs``): same names, images, command,
network, capabilities, ports, mounts, health checks and labels (so ``kpc status`` and
``kpc up`` recognise them). One difference: systemd supervises (``Restart=always`` in the
unit), so the container runs in the foreground with ``--rm`` instead of Docker's restart
policy. ``kpc ignition render deployhost`` passes the result to the template as ``services``;
each item is ``{"name", "description", "exec_start", "exec_stop"}`` and becomes the unit
``<name>.service``.

Secrets named by environment (``bootcfg.token: {env: NAME}``) come from
``{paths.source_dir}/secrets.env`` (``NAME=value`` lines, mode 0600) when it exists; they are
passed to Docker by name only, never on a command line.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from appliance.config import DEFAULT_CONFIG_PATH, SiteConfig
from appliance.drivers.docker import ContainerSpec
from appliance.services.spec import service_specs

DOCKER = "/usr/bin/docker"
SHELL = "/bin/sh"


def docker_run_argv(spec: ContainerSpec, docker: str = DOCKER) -> list[str]:
    """``docker run`` in the foreground for ``spec`` (systemd restarts it, so ``--rm``)."""
    argv = [docker, "run", "--rm", "--name", spec.name]
    if spec.network:
        argv += ["--network", spec.network]
    for cap in spec.cap_add:
        argv += ["--cap-add", cap]
    for port in spec.ports:
        argv += ["--publish", port.publish_arg()]
    for mount in spec.mounts:
        argv += ["--volume", mount.volume_arg()]
    for key, value in spec.env:
        argv += ["--env", f"{key}={value}"]
    for name in spec.secret_env:
        argv += ["--env", name]  # by name: Docker takes the value from its own environment
    for key, value in spec.labels:
        argv += ["--label", f"{key}={value}"]
    if spec.health is not None:
        h = spec.health
        argv += [
            "--health-cmd", h.command,
            "--health-interval", f"{h.interval}s",
            "--health-timeout", f"{h.timeout}s",
            "--health-retries", str(h.retries),
            "--health-start-period", f"{h.start_period}s",
        ]  # fmt: skip
    return [*argv, spec.image, *spec.command]


def systemd_escape(arg: str) -> str:
    """One argument for an ExecStart= line: double-quoted, ``$`` and ``%`` made literal."""
    text = arg.replace("\\", "\\\\").replace('"', '\\"')
    text = text.replace("$", "$$").replace("%", "%%")
    return f'"{text}"'


def start_script(spec: ContainerSpec, secrets_env: Path) -> str:
    """The shell script a unit runs: drop a stale container, check inputs, exec docker run."""
    lines = [f"{DOCKER} rm --force {shlex.quote(spec.name)} >/dev/null 2>&1"]
    # Without this, docker run would try to pull kpc's image from Docker Hub and fail with a
    # network error; say which image is missing and how kpc makes it.
    image = shlex.quote(spec.image)
    missing = shlex.quote(
        f"image {spec.image} is missing: load kpc's images with 'kpc images load BUNDLE' "
        "(a bundle made by 'kpc images save' where they were built), or build them here "
        "with 'kpc images base' and 'kpc images build'"
    )
    lines.append(
        f"{DOCKER} image inspect {image} >/dev/null 2>&1 || {{ echo {missing} >&2; exit 1; }}"
    )
    for mount in spec.mounts:
        if mount.read_only:
            path = shlex.quote(str(mount.source))
            lines.append(f"test -e {path} || {{ echo {path} is missing >&2; exit 1; }}")
    if spec.secret_env:
        env_file = shlex.quote(str(secrets_env))
        lines.append(f"set -a; if test -r {env_file}; then . {env_file}; fi; set +a")
    lines.append("exec " + shlex.join(docker_run_argv(spec)))
    return "; ".join(lines)


def systemd_services(
    config: SiteConfig, config_file: Path = DEFAULT_CONFIG_PATH
) -> list[dict[str, str]]:
    """One entry per kpc service container to run at boot, in start order."""
    secrets_env = config.paths.source_dir / "secrets.env"
    entries = []
    for service, spec in service_specs(config, config_file).items():
        script = start_script(spec, secrets_env)
        entries.append(
            {
                "name": spec.name,
                "description": f"kpc {service} ({spec.image})",
                "exec_start": f"{SHELL} -c {systemd_escape(script)}",
                "exec_stop": f"{DOCKER} stop --time 10 {spec.name}",
            }
        )
    return entries
