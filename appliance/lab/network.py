"""Make and remove the lab's namespaces, bridges, links, addresses and nftables guard."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import time
from collections.abc import Callable
from functools import partial

from appliance.drivers import netns
from appliance.drivers.docker import ContainerSpec, Docker
from appliance.errors import KpcError
from appliance.lab import render
from appliance.lab.plan import LabPlan
from appliance.lab.state import Resource

log = logging.getLogger(__name__)
Record = Callable[[Resource], None]


def conflicts(plan: LabPlan) -> list[str]:
    """What of ``plan``'s names already exists on this host (another lab, or a leftover)."""
    found = [f"network namespace {ns}" for ns in plan.namespaces if netns.netns_exists(ns)]
    found += [f"network link {link}" for link in plan.host_links if netns.link_exists(link)]
    if netns.nft_table_exists("inet", plan.nft_table):
        found.append(f"nftables table inet {plan.nft_table}")
    for link, cidr in netns.ipv4_addresses():
        net = ipaddress.IPv4Interface(cidr).network
        if net.overlaps(plan.site_net) or net.overlaps(plan.bmc_net):
            found.append(f"address {cidr} on {link} (inside the lab's networks)")
    return found


def missing(plan: LabPlan) -> list[str]:
    """What of ``plan``'s network is gone from this host (after a reboot, or by hand)."""
    gone = [f"namespace {ns}" for ns in plan.namespaces if not netns.netns_exists(ns)]
    gone += [f"link {link}" for link in plan.host_links if not netns.link_exists(link)]
    if not netns.nft_table_exists("inet", plan.nft_table):
        gone.append(f"nftables table inet {plan.nft_table}")
    return gone


def _host_link(plan: LabPlan, link: str, peer: str, bridge: str, cidr: str, record: Record) -> None:
    record(Resource("link", link))
    netns.veth_add(link, peer, None, plan.switch_ns)
    # no IPv6, so the lab router's advertisements cannot give this host a route into the lab
    netns.sysctl_set(f"net.ipv6.conf.{link}.disable_ipv6", "1")
    netns.address_add(link, cidr)
    netns.link_set(link)
    netns.link_set(peer, plan.switch_ns, master=bridge)


def _docker() -> Docker:
    return Docker(os.environ)


def _second_host(plan: LabPlan, image: str, record: Record) -> None:
    """The second deploy host's namespace: Docker cannot start a container in a named
    namespace, so a holder container (``--network none``) owns it; the lab names it
    (``ip netns attach``) and moves the host's site link in. Its services then join it
    with ``services.network: container:HOLDER``."""
    docker = _docker()
    record(Resource("netns", plan.host2_ns))
    docker.run(
        ContainerSpec(
            name=plan.host2_holder,
            image=image,
            # PID 1 of a container ignores SIGTERM unless it handles it: exit at once
            command=("sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"),
            network="none",
            restart="no",
            labels=(("kpc.lab", plan.name), ("kpc.role", "netns-holder")),
        )
    )
    pid = docker.container_pid(plan.host2_holder)
    if pid is None:
        raise KpcError(
            f"the second deploy host's holder container {plan.host2_holder} is not running",
            hint=f"see why: docker logs {plan.host2_holder}",
        )
    netns.netns_attach(plan.host2_ns, pid)
    netns.veth_add("h-site2", plan.host2_link, plan.switch_ns, plan.host2_ns)
    netns.link_set("h-site2", plan.switch_ns, master=plan.site_bridge)
    netns.sysctl_set(f"net.ipv6.conf.{plan.host2_link}.disable_ipv6", "1", plan.host2_ns)
    address = plan.cidr(plan.deploy_host_address(2), plan.site_net)
    netns.address_add(plan.host2_link, address, plan.host2_ns)
    netns.link_set(plan.host2_link, plan.host2_ns)


def create_network(plan: LabPlan, record: Record, holder_image: str = "") -> None:
    """Everything of the plan's network, in an order that never routes anything out.
    ``holder_image``: the image of the second deploy host's holder container."""
    record(Resource("nft", plan.nft_table))
    netns.nft_apply(render.nft_ruleset(plan))
    for ns in plan.own_namespaces:
        record(Resource("netns", ns))
        netns.netns_add(ns)
    sw = plan.switch_ns
    netns.bridge_add(plan.site_bridge, sw)
    netns.bridge_add(plan.bmc_bridge, sw)
    _host_link(
        plan,
        plan.host_site_link,
        "h-site",
        plan.site_bridge,
        plan.cidr(plan.deploy_address, plan.site_net),
        record,
    )
    _host_link(
        plan,
        plan.host_bmc_link,
        "h-bmc",
        plan.bmc_bridge,
        plan.cidr(plan.deploy_bmc_address, plan.bmc_net),
        record,
    )
    # the site router: eth0 in its namespace, its peer on the site bridge
    netns.veth_add("rtr", "eth0", sw, plan.router_ns)
    netns.link_set("rtr", sw, master=plan.site_bridge)
    netns.address_add("eth0", plan.cidr(plan.router_address, plan.site_net), plan.router_ns)
    netns.address_add("eth0", plan.router_ula, plan.router_ns, nodad=True)
    netns.link_set("eth0", plan.router_ns)
    # the BMCs: one namespace, one address per server
    netns.veth_add("bmcs", "eth0", sw, plan.bmc_ns)
    netns.link_set("bmcs", sw, master=plan.bmc_bridge)
    for server in plan.servers:
        netns.address_add("eth0", plan.cidr(server.bmc_address, plan.bmc_net), plan.bmc_ns)
    netns.link_set("eth0", plan.bmc_ns)
    if plan.deploy_hosts > 1:
        _second_host(plan, holder_image, record)
    # the servers' NICs: persistent taps on the site bridge, QEMU attaches to them
    for server in plan.servers:
        netns.tap_add(server.tap, sw)
        netns.link_set(server.tap, sw, master=plan.site_bridge)


def stop_namespace_processes(plan: LabPlan, timeout: float = 10.0) -> list[int]:
    """SIGTERM, then SIGKILL, every process inside the lab's namespaces (all of them were
    started by the lab). Returns the pids that were found."""
    pids: list[int] = []
    for ns in plan.namespaces:
        if netns.netns_exists(ns):
            pids += netns.netns_pids(ns)
    for pid in pids:
        netns.signal_process(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        for pid in alive:
            netns.reap_if_child(pid)
        alive = [pid for pid in alive if netns.process_start_time(pid) is not None]
        if alive:
            time.sleep(0.1)
    for pid in alive:
        log.warning("process %d did not stop on SIGTERM; killing it", pid)
        netns.signal_process(pid, signal.SIGKILL)
        netns.reap_if_child(pid)
    return pids


def delete_network(plan: LabPlan) -> list[str]:
    """Remove the plan's network (whatever of it exists). Returns problems, if any."""
    problems: list[str] = []

    def attempt(what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except KpcError as exc:
            problems.append(f"{what}: {exc.message}")

    for link in plan.host_links:
        if netns.link_exists(link):
            attempt(f"link {link}", partial(netns.link_delete, link))
    for ns in plan.namespaces:
        if netns.netns_exists(ns):
            attempt(f"namespace {ns}", partial(netns.netns_delete, ns))
    if plan.deploy_hosts > 1:
        attempt(f"container {plan.host2_holder}", partial(_docker().remove, plan.host2_holder, 1))
    if netns.nft_table_exists("inet", plan.nft_table):
        attempt(
            f"nftables table {plan.nft_table}",
            partial(netns.nft_delete_table, "inet", plan.nft_table),
        )
    return problems
