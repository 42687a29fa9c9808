"""What runs inside the deployer container for each ``kpc kolla`` command. Pure.

Paths are the container's: the site's Kolla config directory is mounted at ``/etc/kolla``
(kolla-ansible's default, so its ``node_custom_config`` default ``/etc/kolla/config`` works),
kpc's own Kolla files (playbooks, ansible.cfg) at ``/usr/share/kpc/kolla``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CONFIG_DIR = "/etc/kolla"
INVENTORY = f"{CONFIG_DIR}/inventory"
GLOBALS = f"{CONFIG_DIR}/globals.yml"
PASSWORDS = f"{CONFIG_DIR}/passwords.yml"
KPC_DIR = "/usr/share/kpc/kolla"
RUN_DIR = "/run/kpc"  # per-run files: SSH key, known_hosts
SSH_KEY = f"{RUN_DIR}/ssh/id"
KNOWN_HOSTS = f"{RUN_DIR}/known_hosts"
FLATCAR_PLAYBOOK = f"{KPC_DIR}/flatcar-prepare.yml"
WHEELS = "/opt/kpc/wheels"  # built into the image (containers/kolla_deployer)
PASSWORDS_TEMPLATE = "/opt/kolla/share/kolla-ansible/etc_examples/kolla/passwords.yml"
MULTINODE = "/opt/kolla/share/kolla-ansible/ansible/inventory/multinode"
DESTROY_LIMIT = "all:!localhost"  # the nodes: never the deployer container itself


@dataclass(frozen=True)
class Step:
    """One command of ``kpc kolla``: what it runs and what its help says it does."""

    name: str
    summary: str
    kolla: str | None  # kolla-ansible subcommand; None for kpc's own playbook
    destructive: bool = False


STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        Step(
            "bootstrap",
            "Prepare Flatcar nodes for Kolla: Python from Flatcar's python sysext, the Docker "
            "SDK and dbus-python from wheels the deployer carries (kpc's playbook; kolla's own "
            "bootstrap-servers cannot install packages on Flatcar).",
            None,
        ),
        Step("prechecks", "Run kolla-ansible's pre-deployment checks on every node.", "prechecks"),
        Step("deploy", "Deploy OpenStack: pull images and start every Kolla container.", "deploy"),
        Step("pull", "Pull the release's images on every node, without starting them.", "pull"),
        Step(
            "post-deploy",
            "Write admin-openrc.sh (and clouds.yaml) into the Kolla config directory.",
            "post-deploy",
        ),
        Step("reconfigure", "Apply changed configuration to running services.", "reconfigure"),
        Step("upgrade", "Upgrade the running services to the configured release.", "upgrade"),
        Step(
            "destroy",
            "Remove every Kolla container, volume and host configuration from the nodes.",
            "destroy",
            destructive=True,
        ),
    )
}


def kolla_argv(step: str, extra: Sequence[str] = (), *, sysext_url: str = "") -> list[str]:
    """The exact command line run inside the deployer for ``kpc kolla <step>``.

    ``sysext_url`` is where nodes fetch Flatcar's python extension (``bootstrap`` only):
    ``<url>/<flatcar version>/flatcar-python.raw``.
    """
    try:
        spec = STEPS[step]
    except KeyError:
        raise ValueError(f"unknown kolla step {step!r}") from None
    if spec.kolla is None:
        return [
            "ansible-playbook",
            "--inventory",
            INVENTORY,
            "--extra-vars",
            f"@{GLOBALS}",
            "--extra-vars",
            f"kpc_wheels={WHEELS}",
            "--extra-vars",
            f"kpc_sysext_base_url={sysext_url}",
            FLATCAR_PLAYBOOK,
            *extra,
        ]
    argv = ["kolla-ansible", spec.kolla, "--configdir", CONFIG_DIR, "--inventory", INVENTORY]
    if spec.destructive:
        # kpc asked the operator already (or was given --yes).
        argv.append("--yes-i-really-really-mean-it")
    if step == "destroy":
        # kolla's destroy play runs on every inventory host, the deployment group's
        # localhost too: here that is the deployer container, which has no Docker and no
        # Kolla containers (kolla failed it, and with it the whole run)
        argv += ["--limit", DESTROY_LIMIT]
    return [*argv, *extra]


def genpwd_argv(target: str) -> list[str]:
    """Fill a fresh copy of kolla's passwords template at ``target`` (mode 0600)."""
    return [
        "sh",
        "-ec",
        f'umask 077; cp {PASSWORDS_TEMPLATE} "$1"; kolla-genpwd -p "$1" >/dev/null',
        "genpwd",
        target,
    ]
