"""The virtual lab's layout as pure data: namespaces, bridges, links, addresses, servers.

::

    host (root namespace)                 switch namespace NAME-sw
      NAMEab0 198.18.0.2/24 ──veth── h-site ─┐
                                              ├─ br-site ── tap1..tapN (QEMU servers' NICs)
      router namespace NAME-rtr               │
        eth0 198.18.0.1/24 + fd98:18::1 ─veth─ rtr ─┘    (plain DHCP + IPv6 RA, no PXE)
      NAMEab1 198.18.1.2/24 ──veth── h-bmc ──┐
                                              ├─ br-bmc
      BMC namespace NAME-bmc                  │
        eth0 198.18.1.11..  ─────────veth─ bmcs ─┘  (one simulated BMC per server)

The host-side links let kpc's own services (``--net=host`` containers) and ``kpc bmc
discover`` reach the lab unchanged; an nftables table drops any forwarding from or to them,
so nothing is routed out. Addresses come from 198.18.0.0/15 (RFC 2544, benchmarking).
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from dataclasses import dataclass
from typing import Literal

from appliance.errors import UsageError

Firmware = Literal["bios", "uefi"]
FirmwareChoice = Literal["bios", "uefi", "mixed"]
BmcProtocol = Literal["ipmi", "redfish"]
BmcChoice = Literal["ipmi", "redfish", "mixed"]
Role = Literal["node", "live"]

LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
SITE_NET = ipaddress.IPv4Network("198.18.0.0/24")
BMC_NET = ipaddress.IPv4Network("198.18.1.0/24")
DEFAULT_NAME = "kpcl"
MAX_SERVERS = 64
# A Kolla control node holding keystone, MariaDB and their images needs several GiB.
MAX_MEMORY_MIB = 16384
MAX_CPUS = 8  # vCPUs per server (TCG: one host thread each)
BMC_HOST_OFFSET = 10  # server i's BMC is .(10 + i)
DHCP_FIRST, DHCP_LAST = 100, 199
LIVE_HOST_OFFSET = 20  # a live host's fixed site address is .(20 + index): below DHCP's range
MAX_NETWORK = 127
MAX_DEPLOY_HOSTS = 2
ETCD_PORT = 2379  # the lab's etcd members: clients on this port (and +2), peers on +1
NAME_RE = re.compile(r"^[a-z][a-z0-9]{1,9}$")


@dataclass(frozen=True)
class Server:
    """One lab server: a QEMU VM with one virtio NIC and one virtio disk, and its BMC."""

    index: int
    firmware: Firmware
    mac: str
    tap: str
    bmc_address: ipaddress.IPv4Address
    memory_mib: int
    bmc: BmcProtocol = "ipmi"  # what its simulated BMC speaks
    cpus: int = 1  # vCPUs
    # node: installed by kpc over PXE; live: a deploy host to be, live-booted from the node
    # OS's CD (kpc lab up --live-host), never PXE-booted, so never installed by kpc
    role: Role = "node"

    @property
    def name(self) -> str:
        return f"{'live' if self.role == 'live' else 'server'}{self.index}"

    @property
    def uuid(self) -> str:
        """The SMBIOS system UUID (matchbox's most used selector): unique per MAC."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kpc-lab-server:{self.mac}"))

    @property
    def serial(self) -> str:
        """The SMBIOS system serial number, unique per MAC."""
        return "KPCLAB" + self.mac.replace(":", "")[-6:].upper()


@dataclass(frozen=True)
class LabPlan:
    name: str
    servers: tuple[Server, ...]
    site_net: ipaddress.IPv4Network = SITE_NET
    bmc_net: ipaddress.IPv4Network = BMC_NET
    disk_gib: int = 2
    deploy_hosts: int = 1  # 2: a second deploy host in its own namespace, etcd for both

    # --- names --------------------------------------------------------------------------
    @property
    def nodes(self) -> tuple[Server, ...]:
        """The servers kpc provisions (every server but a live host)."""
        return tuple(s for s in self.servers if s.role == "node")

    @property
    def live_hosts(self) -> tuple[Server, ...]:
        return tuple(s for s in self.servers if s.role == "live")

    def live_address(self, server: Server) -> ipaddress.IPv4Address:
        """A live host's site address (the router's DHCP reservation for its MAC)."""
        return self._host(self.site_net, LIVE_HOST_OFFSET + server.index)

    @property
    def switch_ns(self) -> str:
        return f"{self.name}-sw"

    @property
    def router_ns(self) -> str:
        return f"{self.name}-rtr"

    @property
    def bmc_ns(self) -> str:
        return f"{self.name}-bmc"

    @property
    def own_namespaces(self) -> tuple[str, ...]:
        """The namespaces the lab makes itself (``ip netns add``)."""
        return (self.switch_ns, self.router_ns, self.bmc_ns)

    @property
    def host2_ns(self) -> str:
        """The second deploy host's namespace: its holder container's, named by the lab."""
        return f"{self.name}-dh2"

    @property
    def host2_holder(self) -> str:
        """The container (``--network none``) whose namespace is the second deploy host's."""
        return f"{self.name}-dh2"

    host2_link = "site0"  # the second deploy host's site link, inside its namespace

    @property
    def namespaces(self) -> tuple[str, ...]:
        extra = (self.host2_ns,) if self.deploy_hosts > 1 else ()
        return (*self.own_namespaces, *extra)

    @property
    def host_site_link(self) -> str:
        """The deploy host's link on the site (PXE) network: provisioning.interface."""
        return f"{self.name}ab0"

    @property
    def host_bmc_link(self) -> str:
        return f"{self.name}ab1"

    @property
    def host_links(self) -> tuple[str, ...]:
        return (self.host_site_link, self.host_bmc_link)

    site_bridge = "br-site"
    bmc_bridge = "br-bmc"

    @property
    def nft_table(self) -> str:
        return f"{self.name}_lab"

    # --- addresses ----------------------------------------------------------------------
    def _host(self, net: ipaddress.IPv4Network, number: int) -> ipaddress.IPv4Address:
        return net.network_address + number

    @property
    def router_address(self) -> ipaddress.IPv4Address:
        return self._host(self.site_net, 1)

    @property
    def deploy_address(self) -> ipaddress.IPv4Address:
        """The deploy host's address on the site network (provisioning.address)."""
        return self._host(self.site_net, 2)

    def deploy_host_address(self, host: int) -> ipaddress.IPv4Address:
        """Deploy host ``host``'s (1, 2) address on the site network: .2, .3."""
        return self._host(self.site_net, 1 + host)

    @property
    def etcd_members(self) -> tuple[tuple[int, ipaddress.IPv4Address, int], ...]:
        """The lab's etcd cluster (with two deploy hosts): (deploy host, address, client
        port) per member; the peer port is the client port + 1. Two members on the first
        host, one on the second: stopping either host's services keeps quorum."""
        if self.deploy_hosts < 2:
            return ()
        first, second = self.deploy_host_address(1), self.deploy_host_address(2)
        return ((1, first, ETCD_PORT), (2, second, ETCD_PORT), (1, first, ETCD_PORT + 2))

    @property
    def deploy_bmc_address(self) -> ipaddress.IPv4Address:
        return self._host(self.bmc_net, 2)

    @property
    def dhcp_range(self) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
        return self._host(self.site_net, DHCP_FIRST), self._host(self.site_net, DHCP_LAST)

    @property
    def router_ula(self) -> str:
        """The site router's IPv6 ULA (it advertises this /64 in its RAs)."""
        third = int(self.site_net.network_address.packed[2])
        return f"fd98:18:{third:x}::1/64"

    def cidr(self, address: ipaddress.IPv4Address, net: ipaddress.IPv4Network) -> str:
        return f"{address}/{net.prefixlen}"

    def server(self, key: str) -> Server:
        """A server by name (server2), index (2) or MAC."""
        for server in self.servers:
            if key in (server.name, str(server.index), server.mac):
                return server
        names = ", ".join(s.name for s in self.servers)
        raise UsageError(f"the lab has no server {key!r} (it has {names})")


def firmware_for(index: int, choice: FirmwareChoice) -> Firmware:
    """``mixed``: odd servers BIOS, even servers UEFI (so 2+ servers cover both)."""
    if choice == "mixed":
        return "bios" if index % 2 else "uefi"
    return choice


def server_mac(index: int) -> str:
    """QEMU's 52:54:00 prefix, then c6:12 (198.18), then the server number."""
    return f"52:54:00:c6:12:{index:02x}"


def lab_networks(index: int) -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]:
    """Lab network ``index`` (0-127): the site and BMC /24s of one /23 in 198.18.0.0/15."""
    if not 0 <= index <= MAX_NETWORK:
        raise UsageError(f"--network must be between 0 and {MAX_NETWORK} (got {index})")
    base = LAB_RANGE.network_address + index * 512
    return ipaddress.IPv4Network(f"{base}/24"), ipaddress.IPv4Network(f"{base + 256}/24")


def bmc_for(index: int, choice: BmcChoice) -> BmcProtocol:
    """``mixed``: servers 1, 4, 5, 8, … IPMI, the others Redfish (crossed with the firmware's
    odd/even, so 3+ servers cover BIOS and UEFI behind Redfish, and BIOS behind IPMI)."""
    if choice == "mixed":
        return "redfish" if (index // 2) % 2 else "ipmi"
    return choice


def make_plan(
    nodes: int,
    firmware: FirmwareChoice = "mixed",
    *,
    bmc: BmcChoice = "ipmi",
    name: str = DEFAULT_NAME,
    memory_mib: int = 256,
    cpus: int = 1,
    network: int = 0,
    deploy_hosts: int = 1,
    live_host_memory_mib: int | None = None,
) -> LabPlan:
    """The lab for ``nodes`` servers, plus one live host (``live_host_memory_mib`` given) as
    the last server; UsageError for numbers or names that cannot work."""
    if not NAME_RE.fullmatch(name):
        raise UsageError(
            f"lab name {name!r} is not usable",
            hint="2-10 characters: a lowercase letter, then lowercase letters or digits",
        )
    live = live_host_memory_mib is not None
    fewest = 0 if live else 1  # a lab of one live host alone is fine
    if not fewest <= nodes <= MAX_SERVERS - live:
        raise UsageError(
            f"--nodes must be between {fewest} and {MAX_SERVERS - live} (got {nodes})"
            + (" with --live-host" if live else "")
        )
    for memory in (memory_mib, live_host_memory_mib or memory_mib):
        if not 192 <= memory <= MAX_MEMORY_MIB:
            raise UsageError(
                f"--memory must be between 192 and {MAX_MEMORY_MIB} MiB (got {memory})"
            )
    if not 1 <= cpus <= MAX_CPUS:
        raise UsageError(f"--cpus must be between 1 and {MAX_CPUS} (got {cpus})")
    if not 1 <= deploy_hosts <= MAX_DEPLOY_HOSTS:
        raise UsageError(
            f"--deploy-hosts must be between 1 and {MAX_DEPLOY_HOSTS} (got {deploy_hosts})"
        )
    site_net, bmc_net = lab_networks(network)

    def server(i: int, memory: int, role: Role = "node") -> Server:
        return Server(
            index=i,
            firmware=firmware_for(i, firmware),
            mac=server_mac(i),
            tap=f"tap{i}",
            bmc_address=bmc_net.network_address + BMC_HOST_OFFSET + i,
            memory_mib=memory,
            cpus=cpus,
            bmc=bmc_for(i, bmc),
            role=role,
        )

    servers = tuple(server(i, memory_mib) for i in range(1, nodes + 1))
    if live_host_memory_mib is not None:
        servers += (server(nodes + 1, live_host_memory_mib, "live"),)
    return LabPlan(
        name=name,
        servers=servers,
        site_net=site_net,
        bmc_net=bmc_net,
        deploy_hosts=deploy_hosts,
    )


def plan_to_dict(plan: LabPlan) -> dict[str, object]:
    return {
        "name": plan.name,
        "site_net": str(plan.site_net),
        "bmc_net": str(plan.bmc_net),
        "disk_gib": plan.disk_gib,
        "deploy_hosts": plan.deploy_hosts,
        "servers": [
            {
                "index": s.index,
                "firmware": s.firmware,
                "mac": s.mac,
                "tap": s.tap,
                "bmc_address": str(s.bmc_address),
                "memory_mib": s.memory_mib,
                "cpus": s.cpus,
                "bmc": s.bmc,
                "role": s.role,
            }
            for s in plan.servers
        ],
    }


def plan_from_dict(data: dict[str, object]) -> LabPlan:
    """Inverse of ``plan_to_dict``; ValueError/KeyError/TypeError on a damaged record."""
    raw_servers = data["servers"]
    if not isinstance(raw_servers, list):
        raise ValueError("servers: expected a list")
    servers = []
    for item in raw_servers:
        firmware = str(item["firmware"])
        if firmware not in ("bios", "uefi"):
            raise ValueError(f"firmware {firmware!r}")
        servers.append(
            Server(
                index=int(item["index"]),
                firmware="bios" if firmware == "bios" else "uefi",
                mac=str(item["mac"]),
                tap=str(item["tap"]),
                bmc_address=ipaddress.IPv4Address(str(item["bmc_address"])),
                memory_mib=int(item["memory_mib"]),
                cpus=int(item.get("cpus", 1)),
                bmc="redfish" if item.get("bmc") == "redfish" else "ipmi",
                role="live" if item.get("role") == "live" else "node",
            )
        )
    disk_gib = data.get("disk_gib", 2)
    hosts = data.get("deploy_hosts", 1)
    return LabPlan(
        name=str(data["name"]),
        servers=tuple(servers),
        site_net=ipaddress.IPv4Network(str(data["site_net"])),
        bmc_net=ipaddress.IPv4Network(str(data["bmc_net"])),
        disk_gib=int(disk_gib) if isinstance(disk_gib, int) else 2,
        deploy_hosts=int(hosts) if isinstance(hosts, int) else 1,
    )
