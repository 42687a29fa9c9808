"""The fully commented site configuration that ``kpc config init`` writes. Pure.

Every option of the site config appears, with what it does; the ones that must fit this
site are set (with values detected on this host), the rest are commented out showing their
default. Defaults are taken from the model itself, so the text cannot drift from it.
"""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from typing import Any

import yaml

from appliance.config import (
    Bmc,
    Bootcfg,
    Images,
    InstallDisk,
    Kolla,
    Os,
    Paths,
    Registry,
    Roles,
    Services,
    Ssh,
    Web,
)


@dataclass(frozen=True)
class InitValues:
    """What ``config init`` fills in, and why (shown as comments)."""

    interface: str
    address: str
    subnet: str
    network_note: str
    os_version: str
    os_note: str
    os_channel: str = Os().channel  # install-host pins the live host's channel


def scalar(value: Any) -> str:
    """A YAML scalar for ``value`` (JSON strings are valid YAML and quote everything)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(scalar(v) for v in value) + "]"
    text = str(value)
    if re.fullmatch(r"[A-Za-z0-9_./:@+-]+", text) and yaml.safe_load(text) == text:
        return text  # a plain scalar that reads back as the same string
    return json.dumps(text)


def comment(text: str, indent: str = "") -> str:
    """``text`` as YAML comment lines of at most 92 columns."""
    lines = textwrap.wrap(text, width=92 - len(indent) - 2)
    return "\n".join(f"{indent}# {line}" for line in lines)


def config_template(values: InitValues) -> str:
    """The text of a complete, commented kpc.yaml."""
    bmc, os_, disk, boot = Bmc(), Os(), InstallDisk(), Bootcfg()
    reg, kolla, roles, images = Registry(), Kolla(), Roles(), Images()
    services, ssh, paths, web = Services(), Ssh(), Paths(), Web()
    s = scalar
    return f"""\
# kpc site configuration.
# Written by 'kpc config init'. Check it with 'kpc config validate'; see the effective values
# (defaults included) with 'kpc config show'. Unknown keys are errors, so a typo never goes
# unnoticed. Secrets are never written here: give a reference instead, either
#   {{env: NAME}}   an environment variable kpc reads when it runs, or
#   {{file: PATH}}  a file readable only by its owner (chmod 600).

# The network the servers PXE boot on. kpc answers PXE clients there with proxy-DHCP (your
# existing DHCP server keeps handing out addresses) and serves iPXE scripts and Ignition
# configs from bootcfg on this host.
{comment("Detected: " + values.network_note + ".")}
provisioning:
  interface: {s(values.interface)}    # this host's interface on that network
  address: {s(values.address)}    # this host's IPv4 address there (nodes fetch from it)
  subnet: {s(values.subnet)}    # the network, in CIDR form; address must be inside it

# The BMCs of the servers: IPMI over LAN (UDP 623) and Redfish (HTTPS).
bmc:
  # Networks to search for BMCs ('kpc bmc discover'), in CIDR form.
  networks: []    # e.g. [10.100.0.0/24]
  # Which protocol to speak: auto (Redfish where discovery found it, else IPMI), ipmi, redfish.
  # protocol: {bmc.protocol}
  # CA bundle (PEM) that signed the BMCs' HTTPS certificates; without one, each BMC's
  # certificate is pinned on first use and a changed one is refused ('kpc bmc forget-cert').
  # ca_bundle: /etc/kpc/bmc-ca.pem
  # User and password for every BMC unless a host entry below overrides it.
  user: {s(bmc.user)}
  password: {{env: {bmc.password.env}}}    # or {{file: /etc/kpc/secrets/bmc-password}}
  # BMCs that need their own settings:
  # hosts:
  #   - address: 10.100.0.21
  #     name: rack1-u21
  #     user: root
  #     password: {{file: /etc/kpc/secrets/rack1-u21}}
  #     protocol: redfish    # ipmi or redfish, for this host only
  # rate: {bmc.rate}    # discovery packets per second (keep a busy LAN's ARP tables sane)
  # fanout: {bmc.fanout}    # BMCs talked to at the same time
  # timeout: {bmc.timeout}    # seconds to wait for a BMC's answer

# The OS kpc installs on every node (and that the deploy host runs).
os:
  # flavor: {os_.flavor}    # the only one supported
  channel: {s(values.os_channel)}    # stable, beta, alpha or lts
{comment(values.os_note, "  ")}
  version: {s(values.os_version)}    # 'host' (same as this host), 'current', or e.g. 3975.2.0
  # Flatcar's release mirror: 'kpc assets fetch' downloads (and verifies) the PXE kernel,
  # initrd and install image from it; {{channel}} is replaced by the channel.
  # mirror: {s(os_.mirror)}
  # Where nodes download the image flatcar-install writes: 'bootcfg' (this host's verified
  # assets, like the PXE kernel: nodes need no Internet) or 'mirror' (straight from mirror).
  # install_from: {s(os_.install_from)}
  # Which disk the installer wipes on each node. Either a name pattern under
  # /dev/disk/by-path or /dev/disk/by-id that must match exactly one disk, or (the default)
  # the smallest disk that is neither removable nor read-only. A rule that matches no disk,
  # or several, stops the install: kpc never guesses.
  install_disk:
    # by_path: "pci-0000:00:1f.2-ata-1*"
    # by_id: "wwn-0x5000c500a1b2c3d4"
    smallest: {s(disk.smallest)}

# The HTTP service (bootcfg) PXE-booting machines get iPXE scripts, Ignition and images from.
bootcfg:
  # listen: {s(str(boot.listen))}    # address to bind (0.0.0.0: all)
  port: {boot.port}
  # data_dir: {s(str(boot.data_dir))}    # profiles, groups, templates, assets
  # state_db: {s(str(boot.data_dir / "machines.db"))}    # the machine registry
  # How nodes prove who they are when they report back (docs/security.md). per-machine:
  # install-complete needs the machine's own install token (inside its installer config),
  # check-ins are signed with the SSH host key it reported at install, unknown MACs cannot
  # create or move machines. open: anyone on the provisioning LAN can (warned by validate).
  # node_auth: {s(boot.node_auth)}
  # token: {{env: KPC_BOOTCFG_TOKEN}}    # node_auth open only: a shared token nodes send
  # max_body: {boot.max_body}    # largest request body accepted, in bytes
  # max_unknown: {boot.max_unknown}    # machines seen but never installed, at most
  # new_machines_per_minute: {boot.new_machines_per_minute}    # new MACs recorded, at most
  # # several deploy hosts on one etcd registry: the others' bootcfg, where nodes report
  # # install-complete and check-ins when this one does not answer
  # peers: [http://10.0.0.6:8080]

# The Docker registry on this host that the nodes pull OpenStack images from.
registry:
  # address: 198.18.0.2    # default: provisioning.address
  port: {reg.port}
  # storage: {s(str(reg.storage))}
  # tls: {s(reg.tls)}    # false: nodes trust it as a plain-HTTP ("insecure") registry
  # user: kpc
  # password: {{env: KPC_REGISTRY_PASSWORD}}

# OpenStack, deployed by kolla-ansible.
kolla:
  release: {s(kolla.release)}    # OpenStack series; pins kolla, kolla-ansible, the Debian suite
  # Services: 'core' is kolla-ansible's default OpenStack core; 'minimal' is keystone
  # alone (with MariaDB, memcached, HAProxy/keepalived), for a lab or a first rack test.
  services: {s(kolla.services)}
  base_distro: {s(kolla.base_distro)}    # debian, ubuntu, rocky or centos
  # internal_vip: 10.101.0.250    # an unused address on the management network
  network_interface: {s(kolla.network_interface)}    # management NIC of nodes whose facts name none
  neutron_external_interface: {s(kolla.neutron_external_interface)}    # provider network NIC
  # config_dir: {s(str(kolla.config_dir))}
  # ssh_user: {s(kolla.ssh_user)}
  # Which machines get which roles: the first N ready machines get first_groups, the rest
  # rest_groups; by_mac pins a machine (by its boot MAC) to groups of your choice.
  roles:
    first: {roles.first}
    first_groups: {s(roles.first_groups)}
    rest_groups: {s(roles.rest_groups)}
    # by_mac:
    #   "52:54:00:12:34:56": [control, storage]
  # Extra settings written into kolla's globals.yml as they are:
  # globals:
  #   enable_cinder: "yes"
  # upstream_registry: {s(kolla.upstream_registry)}
  # upstream_namespace: {s(kolla.upstream_namespace)}
  # build_threads: {kolla.build_threads}    # images 'kpc kolla images build' builds at once

# How kpc builds its own container images (from a local base image; no outside registry).
# images:
#   base: {s(images.base)}
#   prefix: {s(images.prefix)}
#   debian_mirror: {s(images.debian_mirror)}
#   debian_suite: {s(images.debian_suite)}
#   pypi_index: https://pypi.example/simple    # default: pip's own
#   ca_bundle: /etc/ssl/certs/ca-certificates.crt    # CA bundle for pip inside builds

# How kpc runs its service containers.
# services:
#   prefix: {s(services.prefix)}    # container names are <prefix>-<service>
#   health_timeout: {services.health_timeout}    # seconds a service gets to become healthy
#   # a deploy host in its own network namespace: every service joins the namespace of
#   # container NAME (started with --network none, its veth moved in); nothing is published
#   network: container:NAME    # default: dnsmasq on the host network, bootcfg published

# How kpc reaches the nodes over SSH.
# ssh:
#   user: {s(ssh.user)}
#   private_key: /root/.ssh/id_ed25519    # default: ssh's own choice
#   port: {ssh.port}
#   fanout: {ssh.fanout}    # nodes talked to at the same time
#   timeout: {ssh.timeout}    # seconds

# Where kpc keeps its files on this host.
# paths:
#   state_dir: {s(str(paths.state_dir))}
#   log_dir: {s(str(paths.log_dir))}
#   source_dir: {s(str(paths.source_dir))}    # kpc's templates and container definitions

# The live web view of the rack ('kpc web'; with enabled: true also a service of 'kpc up').
# It always needs a login: the site password below, or a reverse proxy's user header.
# web:
#   enabled: {s(web.enabled)}
#   listen: 198.18.0.2    # default: provisioning.address
#   port: {web.port}
#   password: {{file: /etc/kpc/secrets/web-password}}    # operators log in with it
#   proxy_header: X-Remote-User    # or trust this header set by a reverse proxy ...
#   proxy_addresses: [127.0.0.1]    # ... only on requests from these addresses
#   actions: {s(web.actions)}    # true: boot mode, power and PXE from the web (confirmed, audited)
#   session_hours: {web.session_hours}    # a login lasts this long
#   stuck_after: {{discovered: 900, installing: 1800, installed: 900}}    # seconds, then stuck
#   serial_logs: /var/lib/kpc/lab/servers    # lab only: show each server's console tail

# Where the machine registry lives. sqlite (default): one file on this host
# (bootcfg.state_db). etcd: a cluster several deploy hosts share (each runs its own
# dnsmasq and bootcfg; every kpc command sees the same machines from any of them).
# state:
#   backend: sqlite    # or etcd
#   etcd:
#     endpoints: [https://10.0.0.5:2379, https://10.0.0.6:2379, https://10.0.0.7:2379]
#     prefix: kpc/    # every key kpc writes starts with it
#     ca_file: /etc/kpc/etcd/ca.crt    # the CA of the members' certificates
#     cert_file: /etc/kpc/etcd/client.crt    # a client certificate ...
#     key: {{file: /etc/kpc/secrets/etcd-client.key}}    # ... and its key (a secret reference)
#     user: kpc    # and/or etcd user auth
#     password: {{env: KPC_ETCD_PASSWORD}}
#     timeout: 2.0    # seconds per request; without quorum writes fail (503, retried)
"""


__all__ = ["InitValues", "comment", "config_template", "scalar"]
