"""The OpenStack release kpc deploys: every pinned version in one place. Pure.

A row pins kolla (the image builder) and kolla-ansible (the deployer) of the same OpenStack
series, the ansible-core that kolla-ansible accepts (its prechecks compare major.minor), the
PyPI ``ansible`` bundle the deployer takes Ansible collections from (Galaxy is unreachable
offline), and the Debian suite that is both the images' base and the nodes' host OS.

Release table (read from each sdist: kolla's ``kolla/common/config.py`` for the Debian base,
kolla-ansible's ``group_vars/all/common.yml`` for ``openstack_release``, its metadata for
``Requires-Python`` and the ansible-core range): 2026.2 = kolla/kolla-ansible 23.0.0 on Debian
13 trixie, Python >= 3.12, ansible-core >= 2.20, < 2.22 (prechecks: 2.20 .. 2.21).
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.errors import ConfigError


@dataclass(frozen=True)
class Release:
    series: str  # OpenStack series: openstack_release in globals.yml
    kolla: str
    kolla_ansible: str
    ansible_core: str
    ansible_bundle: str  # the PyPI 'ansible' package whose wheel carries the collections
    debian_suite: str  # kolla_base_distro_version: the images' base and the nodes' OS

    def tag(self, distro: str = "debian") -> str:
        """kolla-ansible's default ``openstack_tag``: ``<release>-<distro>-<version>``."""
        return f"{self.series}-{distro}-{self.debian_suite}"

    def build_args(self) -> dict[str, str]:
        """Build arguments of the deployer and builder Dockerfiles (containers/README.md)."""
        return {
            "OPENSTACK_RELEASE": self.series,
            "KOLLA_VERSION": self.kolla,
            "KOLLA_ANSIBLE_VERSION": self.kolla_ansible,
            "ANSIBLE_CORE_VERSION": self.ansible_core,
            "ANSIBLE_VERSION": self.ansible_bundle,
        }


RELEASES: dict[str, Release] = {
    r.series: r
    for r in (
        Release(
            series="2026.2",
            kolla="23.0.0",
            kolla_ansible="23.0.0",
            ansible_core="2.20.10",
            ansible_bundle="13.8.0",
            debian_suite="trixie",
        ),
    )
}
DEFAULT = "2026.2"


def release(series: str) -> Release:
    try:
        return RELEASES[series]
    except KeyError:
        raise ConfigError(
            f"kolla.release: kpc does not know OpenStack release {series!r}",
            hint=f"set kolla.release to one of: {', '.join(RELEASES)}",
        ) from None
