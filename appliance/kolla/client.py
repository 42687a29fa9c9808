"""``kpc kolla openstack -- ARGS``: the OpenStack client from the deployer, as the admin.

The credentials are kolla's own ``admin-openrc.sh`` (written by ``kpc kolla post-deploy``,
mode 0600): the config directory is mounted read-only into the deployer and the client runs
after sourcing it, so the password is never on a command line or in the environment of a
process outside that container.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from appliance.config import SiteConfig
from appliance.drivers.docker import Docker, Mount
from appliance.errors import ConfigError, KpcError
from appliance.kolla import commands, deployer
from appliance.kolla.genconfig import deployer_image, deployer_name

OPENRC = "admin-openrc.sh"
NEEDED = ("OS_AUTH_URL", "OS_USERNAME", "OS_PASSWORD")
GET_ONE = "write it with 'kpc kolla post-deploy' (after a successful 'kpc kolla deploy')"
_EXPORT = re.compile(r"^\s*export\s+([A-Z_][A-Z0-9_]*)=", re.MULTILINE)


def openrc_path(config: SiteConfig) -> Path:
    return config.kolla.config_dir / OPENRC


def check_openrc(path: Path) -> None:
    """The admin openrc is there, private and complete; else say how to get one."""
    if not path.is_file():
        raise ConfigError(f"no admin credentials: {path} does not exist", hint=GET_ONE)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", hint=GET_ONE) from None
    missing = [name for name in NEEDED if name not in set(_EXPORT.findall(text))]
    if missing:
        raise ConfigError(
            f"{path} is not a kolla admin openrc (it does not export {', '.join(missing)})",
            hint=f"remove it and {GET_ONE}",
        )
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)  # it holds the admin password


def openstack_call(config: SiteConfig, args: Sequence[str]) -> deployer.Call:
    """The deployer container that runs ``openstack ARGS`` with the admin openrc. Pure."""
    script = f'. {commands.CONFIG_DIR}/{OPENRC} && exec openstack "$@"'
    return deployer.Call(
        image=deployer_image(config),
        name=f"{deployer_name(config)}-openstack-{os.getpid()}",
        argv=("sh", "-c", script, "openstack", *args),
        mounts=(Mount(config.kolla.config_dir, commands.CONFIG_DIR, read_only=True),),
        network="host",
    )


AUTH_FAILED = ("HTTP 401", "The request you have made requires authentication")


def run_openstack(
    config: SiteConfig, docker: Docker, args: Sequence[str], on_line: Callable[[str], None]
) -> int:
    """Run the client; its exit code. A refused login says how to renew the credentials."""
    path = openrc_path(config)
    check_openrc(path)
    seen: list[str] = []

    def keep(line: str) -> None:
        seen.append(line)
        del seen[:-50]
        on_line(line)

    code = deployer.stream(docker, openstack_call(config, args), keep)
    if code != 0 and any(marker in line for line in seen for marker in AUTH_FAILED):
        raise KpcError(
            f"keystone refused the credentials in {path}",
            hint="they are out of date (passwords.yml changed, or another cloud): run "
            "'kpc kolla post-deploy' again to rewrite them",
        )
    return code
