"""``kpc kolla genconfig``: write globals.yml, the inventory and passwords.yml.

globals.yml and the inventory are derived data: written again on every run (atomically).
passwords.yml holds the deployment's secrets: generated once with kolla's own
``kolla-genpwd`` inside the deployer, mode 0600, and replaced only when asked (``force``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from appliance.config import SiteConfig
from appliance.drivers.docker import Docker, Mount
from appliance.errors import ConfigError
from appliance.images.catalog import image_ref
from appliance.inputfile import read_yaml
from appliance.kolla import commands, deployer
from appliance.kolla.globals import globals_yaml, render_globals
from appliance.kolla.inventory import Host, assign_roles, host_groups, render_inventory, validate
from appliance.outputfile import write_atomic
from appliance.state.model import Machine

GLOBALS = "globals.yml"
INVENTORY = "inventory"
PASSWORDS = "passwords.yml"
REGISTRY_PASSWORD_KEY = "docker_registry_password"


class Passwords(StrEnum):
    GENERATED = "generated"
    KEPT = "kept"
    REGENERATED = "regenerated"


@dataclass(frozen=True)
class Generated:
    config_dir: Path
    hosts: tuple[Host, ...]
    warnings: tuple[str, ...]
    passwords: Passwords


def deployer_image(config: SiteConfig) -> str:
    return image_ref(config, "kolla_deployer")


def deployer_name(config: SiteConfig) -> str:
    """The one deployer container name: a second concurrent run is refused by Docker."""
    return f"{config.services.prefix}-kolla"


def kolla_inventory(config: SiteConfig, docker: Docker) -> str:
    """kolla-ansible's own multinode inventory, read from the deployer image."""
    call = deployer.Call(
        image=deployer_image(config),
        name=f"{deployer_name(config)}-genconfig",
        argv=("cat", commands.MULTINODE),
        network="none",
    )
    return deployer.output(docker, call)


def _generate_passwords(config: SiteConfig, docker: Docker, config_dir: Path) -> Path:
    """A fresh passwords file from kolla-genpwd, written beside the real one."""
    fresh = ".passwords.yml.new"
    call = deployer.Call(
        image=deployer_image(config),
        name=f"{deployer_name(config)}-genpwd",
        argv=tuple(commands.genpwd_argv(f"{commands.CONFIG_DIR}/{fresh}")),
        mounts=(Mount(config_dir, commands.CONFIG_DIR),),
        network="none",
    )
    deployer.output(docker, call)
    path = config_dir / fresh
    os.chmod(path, 0o600)
    return path


def _set_password(path: Path, key: str, value: str) -> None:
    """Set one entry of a passwords file (kept 0600), if it differs."""
    data: Any = read_yaml(path, what="kolla passwords file") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a mapping of passwords")
    if data.get(key) == value:
        return
    data[key] = value
    write_atomic(path, yaml.safe_dump(data, default_flow_style=False), mode=0o600)


def generate(
    config: SiteConfig,
    machines: Sequence[Machine],
    docker: Docker,
    *,
    force: bool = False,
    registry_password: str | None = None,
    source: str = "the site config",
) -> Generated:
    """Validate, then write the three files into ``kolla.config_dir``."""
    assignment = assign_roles(machines, config)
    template = kolla_inventory(config, docker)
    warnings = validate(assignment, config, machines, host_groups(template))
    globals_text = globals_yaml(render_globals(config), source=source)
    inventory_text = render_inventory(
        assignment,
        template,
        ssh_user=config.kolla.ssh_user,
        ssh_port=config.ssh.port,
        source=source,
    )

    config_dir = config.kolla.config_dir
    config_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(config_dir / GLOBALS, globals_text)
    write_atomic(config_dir / INVENTORY, inventory_text)

    passwords = config_dir / PASSWORDS
    existed = passwords.exists()
    if existed and not force:
        outcome = Passwords.KEPT
    else:
        fresh = _generate_passwords(config, docker, config_dir)
        os.replace(fresh, passwords)
        outcome = Passwords.REGENERATED if existed else Passwords.GENERATED
    if registry_password is not None:
        _set_password(passwords, REGISTRY_PASSWORD_KEY, registry_password)
    os.chmod(passwords, 0o600)
    return Generated(config_dir, assignment.hosts, tuple(warnings), outcome)
