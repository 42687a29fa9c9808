"""Which Kolla images a deployment needs, per OpenStack release and service set. Pure.

``kpc kolla images build`` builds a set with kolla's own builder (kolla-build also builds
their parents: base, openstack-base, <service>-base); ``kpc registry mirror`` copies a set
when no --images are given; ``kpc kolla genconfig`` turns the services of the images that
cannot be built here off in globals.yml. Names as kolla-ansible 23 pulls them:
``<docker_registry>/<docker_namespace>/<name>:<openstack_tag>``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from appliance.errors import UsageError

SETS = ("minimal", "core")
# Images with no Python of OpenStack's in them: they need neither the upper constraints nor
# an sdist (everything else descends from openstack-base or is kolla-toolbox).
PLAIN = frozenset(
    {"cron", "memcached", "haproxy", "keepalived", "mariadb-server", "rabbitmq",
     "openvswitch-db-server", "openvswitch-vswitchd"}
)  # fmt: skip


def needs_python(images: Sequence[str]) -> bool:
    return any(name not in PLAIN for name in images)


@dataclass(frozen=True)
class Unbuildable:
    why: str
    off: str  # the globals.yml switch kpc turns off
    instead: tuple[tuple[str, str], ...] = ()  # what globals.yml turns on in its place


@dataclass(frozen=True)
class ImageSets:
    minimal: tuple[str, ...]
    core: tuple[str, ...]
    sources: dict[str, str]  # kolla source section -> PyPI requirement of its sdist
    unbuildable: dict[str, Unbuildable]
    # globals.yml for the minimal set: keystone alone, on MariaDB, memcached and HAProxy
    minimal_globals: dict[str, str]
    # kolla's optional plugin sources of these images: tarballs on opendev.org, which an
    # offline site cannot reach; kpc turns them off (the images are built without them)
    plugins_off: tuple[str, ...] = ()

    def of(self, name: str) -> tuple[str, ...]:
        return self.minimal if name == "minimal" else self.core

    def globals_for(self, services: str) -> dict[str, str]:
        """What kpc sets in globals.yml for a service set (kolla.globals may override)."""
        data = {u.off: "no" for u in self.unbuildable.values()}
        for unbuildable in self.unbuildable.values():
            data.update(unbuildable.instead)
        if services == "minimal":
            data.update(self.minimal_globals)
        return data


_MINIMAL = (
    "cron",  # common: every node
    "kolla-toolbox",
    "haproxy",  # the load balancer and the VIP
    "keepalived",
    "mariadb-server",
    "memcached",
    "keystone-api",  # keystone served by uwsgi; the httpd image only for federation
    "keystone-fernet",
    "keystone-ssh",
)

IMAGE_SETS: dict[str, ImageSets] = {
    "2026.2": ImageSets(
        minimal=_MINIMAL,
        core=(
            *_MINIMAL,
            "rabbitmq",
            "glance-api",
            "placement-api",
            "nova-api",
            "nova-scheduler",
            "nova-conductor",
            "nova-novncproxy",
            "nova-compute",
            "nova-libvirt",
            "nova-ssh",
            "neutron-server",
            "neutron-openvswitch-agent",
            "neutron-dhcp-agent",
            "neutron-l3-agent",
            "neutron-metadata-agent",
            "openvswitch-db-server",
            "openvswitch-vswitchd",
            "heat-api",
            "heat-api-cfn",
            "heat-engine",
        ),
        sources={
            "keystone-base": "keystone==30.0.0",
            "glance-base": "glance==33.0.0",
            "placement-base": "openstack-placement==16.0.0",
            "nova-base": "nova==34.0.0",
            "neutron-base": "neutron==29.0.0",
            "heat-base": "openstack-heat==27.0.1",
        },
        unbuildable={
            "fluentd": Unbuildable(
                "needs fluent-package from the CNCF apt repository and gems from "
                "rubygems.org; Debian trixie has no fluentd",
                "enable_fluentd",
            ),
            "proxysql": Unbuildable(
                "needs the ProxySQL apt repository; Debian has no proxysql (HAProxy "
                "balances MariaDB instead)",
                "enable_proxysql",
                # kolla 23's only HAProxy frontend for MariaDB: on the internal VIP at
                # database_port, the first MariaDB node active and the others backups
                instead=(("enable_external_mariadb_load_balancer", "yes"),),
            ),
            "horizon": Unbuildable(
                "PyPI has no 2026.2 horizon yet (the newest, 27.0.0, is 2026.1's)",
                "enable_horizon",
            ),
        },
        minimal_globals={
            "enable_openstack_core": "no",
            "enable_keystone": "yes",
            "enable_rabbitmq": "no",
        },
        plugins_off=(
            "nova-base-plugin-blazar",
            "neutron-base-plugin-neutron-fwaas",
            "neutron-base-plugin-networking-baremetal",
            "neutron-base-plugin-networking-generic-switch",
            "neutron-base-plugin-networking-sfc",
            "neutron-base-plugin-tap-as-a-service",
            "neutron-base-plugin-vpnaas-agent",
            "neutron-server-plugin-neutron-dynamic-routing",
        ),
    )
}

# The image a service image is built on, by kolla's naming: keystone-api -> keystone-base.
_SERVICE = re.compile(r"^(keystone|glance|placement|nova|neutron|heat)-")


def image_sets(release: str) -> ImageSets:
    try:
        return IMAGE_SETS[release]
    except KeyError:
        raise UsageError(
            f"kpc has no image list for Kolla release {release}",
            hint=f"kpc knows: {', '.join(IMAGE_SETS)}",
        ) from None


def source_sections(sets: ImageSets, images: Sequence[str]) -> dict[str, str]:
    """The kolla source sections (and sdists) the images need."""
    found = {}
    for name in images:
        match = _SERVICE.match(name)
        if match:
            section = f"{match.group(1)}-base"
            if section in sets.sources:
                found[section] = sets.sources[section]
    return dict(sorted(found.items()))


def choose(
    sets: ImageSets, names: Sequence[str], set_name: str | None, *, default: str = "core"
) -> list[str]:
    """The images to build: NAMES as given, else the set's (default: the site's services)."""
    if names and set_name:
        raise UsageError("give image names or --set, not both")
    if names:
        refused = [n for n in names if n in sets.unbuildable]
        if refused:
            raise UsageError(
                "kpc cannot build " + "; ".join(f"{n}: {sets.unbuildable[n].why}" for n in refused),
                hint="leave them out (kpc turns their services off in globals.yml)",
            )
        bad = [n for n in names if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", n)]
        if bad:
            raise UsageError(
                f"not a Kolla image name: {', '.join(bad)}",
                hint="image names look like keystone-api or mariadb-server",
            )
        return list(dict.fromkeys(names))
    chosen = set_name or default
    if chosen not in SETS:
        raise UsageError(f"no image set {chosen!r}", hint=f"use --set {' or --set '.join(SETS)}")
    return list(sets.of(chosen))
