"""Pure renderers for the lab: the site router's dnsmasq and NTP server commands, the nftables
guard, the simulated BMC's command, and the lab's site configuration."""

from __future__ import annotations

from pathlib import Path

import yaml

from appliance.lab.layout import LabPaths
from appliance.lab.plan import LabPlan, Server

ROUTER_LEASE_TIME = "1h"
SIM_MODULE = "appliance.bmc.sim"
IPMI_PORT = 623  # RMCP, IPMI over LAN (IPMI v2.0 spec, section 13)
LAB_VIP = 250  # host number of kolla_internal_vip_address: outside DHCP (100-199)


def router_argv(plan: LabPlan, leases: Path, log: Path) -> list[str]:
    """The site router: plain DHCP (no PXE options at all, the router and the site's NTP
    server as a site's DHCP gives them) plus IPv6 router advertisements.

    Without an RA, iPXE's IPv6 autoconfiguration waits ~16 s in "Configuring (net0)" on
    every boot; ``--no-ping`` saves another ~3 s per lease.
    """
    first, last = plan.dhcp_range
    return [
        "dnsmasq",
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--port=0",
        "--user=root",
        "--interface=eth0",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--no-ping",
        "--dhcp-authoritative",
        "--enable-ra",
        "--dhcp-range=::,constructor:eth0,ra-only",
        f"--dhcp-range={first},{last},{plan.site_net.netmask},{ROUTER_LEASE_TIME}",
        f"--dhcp-option=option:router,{plan.router_address}",
        f"--dhcp-option=option:ntp-server,{plan.router_address}",
        # a live host's fixed address, so 'kpc lab up' can tell the operator where it is
        *(f"--dhcp-host={s.mac},{plan.live_address(s)}" for s in plan.live_hosts),
        f"--dhcp-leasefile={leases}",
        f"--log-facility={log}",
        "--log-dhcp",
    ]


def ntp_argv(plan: LabPlan, pidfile: Path) -> list[str]:
    """The site's NTP server, on the router: chrony serving this host's clock (the router's
    namespace shares it) to the site network, setting no clock and asking no other server.
    Nodes learn it from DHCP (option 42), as a rack's nodes do, so their clocks agree with
    the deploy host's (kpc's fitness gate and kolla's precheck both need that)."""
    return [
        "chronyd",
        "-d",  # foreground, log to stderr
        "-x",  # never touch the clock
        "-L",
        "0",
        # directives on the command line: chrony then reads no configuration file
        "local stratum 8",
        f"allow {plan.site_net}",
        f"bindaddress {plan.router_address}",
        "cmdport 0",
        f"pidfile {pidfile}",
        "user root",
    ]


def nft_ruleset(plan: LabPlan) -> str:
    """The lab's networks reach this host, never anything beyond it: drop every forwarded
    packet from or to the lab's host-side links, except connections to this host's own
    published container ports (Docker DNATs them to its bridge; kpc's services use them)."""
    links = ", ".join(f'"{link}"' for link in plan.host_links)
    return (
        f"table inet {plan.nft_table} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter - 10; policy accept;\n"
        f"    iifname {{ {links} }} ct status dnat accept\n"
        f"    oifname {{ {links} }} ct state established,related ct status dnat accept\n"
        f"    iifname {{ {links} }} drop\n"
        f"    oifname {{ {links} }} drop\n"
        "  }\n"
        "}\n"
    )


def sim_argv(python: str, server: Server, user: str, password_file: Path, spec: Path) -> list[str]:
    """One simulated BMC with the QEMU backend, speaking the server's protocol (a Redfish
    one only Redfish, like a server shipped with IPMI over LAN switched off)."""
    return [
        python,
        "-m",
        SIM_MODULE,
        "--listen",
        str(server.bmc_address),
        "--protocol",
        server.bmc,
        "--port",
        str(IPMI_PORT),
        "--user",
        user,
        "--password-file",
        str(password_file),
        "--backend",
        "qemu",
        "--vm-spec",
        str(spec),
    ]


ETCD_HEARTBEAT_MS = "250"  # TCG servers share the lab's cores with etcd: be patient
ETCD_ELECTION_MS = "2500"


def etcd_name(plan: LabPlan, index: int) -> str:
    return f"{plan.name}-etcd{index + 1}"


def etcd_argv(plan: LabPlan, index: int, data_dir: Path) -> list[str]:
    """Member ``index`` of the lab's etcd cluster (Debian's etcd-server), plain HTTP on the
    lab's site network (nothing outside the lab reaches it)."""
    members = plan.etcd_members
    _, address, port = members[index]
    client, peer = f"http://{address}:{port}", f"http://{address}:{port + 1}"
    cluster = ",".join(
        f"{etcd_name(plan, i)}=http://{a}:{p + 1}" for i, (_, a, p) in enumerate(members)
    )
    return [
        "etcd",
        *("--name", etcd_name(plan, index), "--data-dir", str(data_dir)),
        *("--listen-client-urls", client, "--advertise-client-urls", client),
        *("--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer),
        *("--initial-cluster", cluster, "--initial-cluster-token", f"kpc-lab-{plan.name}"),
        *("--initial-cluster-state", "new"),
        *("--heartbeat-interval", ETCD_HEARTBEAT_MS, "--election-timeout", ETCD_ELECTION_MS),
    ]


def etcd_endpoints(plan: LabPlan, host: int) -> list[str]:
    """The lab's etcd client URLs as deploy host ``host`` lists them: its own members first
    (the client sticks to the first that answers)."""
    members = sorted(plan.etcd_members, key=lambda m: m[0] != host)
    return [f"http://{address}:{port}" for _, address, port in members]


def bootcfg_urls(plan: LabPlan, port: int, host: int = 1) -> list[str]:
    """Every deploy host's bootcfg URL, deploy host ``host``'s first."""
    hosts = sorted(range(1, plan.deploy_hosts + 1), key=lambda h: h != host)
    return [f"http://{plan.deploy_host_address(h)}:{port}" for h in hosts]


def host_directory(directory: Path, host: int) -> Path:
    """Where deploy host ``host`` keeps its data (the first: the lab directory itself)."""
    return directory if host == 1 else directory / f"host{host}"


def site_config(
    plan: LabPlan,
    *,
    directory: Path,
    bmc_user: str,
    bmc_password_file: Path,
    ssh_private_key: Path,
    bootcfg_port: int,
    registry_port: int,
    services_prefix: str,
    os_version: str = "current",
    host: int = 1,
) -> str:
    """The kpc site configuration for this lab (what ``kpc up`` and friends read); ``host``:
    which deploy host's (the second lives in its own namespace, with its own services)."""
    address = plan.deploy_host_address(host)
    own = host_directory(directory, host)
    services: dict[str, object] = {"prefix": services_prefix}
    if host > 1:
        services = {
            "prefix": f"{services_prefix}-h{host}",
            "network": f"container:{plan.host2_holder}",
        }
    data = {
        "provisioning": {
            "interface": plan.host_site_link if host == 1 else plan.host2_link,
            "address": str(address),
            "subnet": str(plan.site_net),
        },
        "bmc": {
            "networks": [str(plan.bmc_net)],
            # each BMC named by its server's boot MAC: 'kpc pxe-all --only MAC' picks it (a
            # live host's is left out: it is the deploy host to be, not a node)
            "hosts": [{"address": str(s.bmc_address), "name": s.mac} for s in plan.nodes],
            "user": bmc_user,
            "password": {"file": str(bmc_password_file)},
            "timeout": 5.0,
        },
        "os": {"version": os_version},
        "bootcfg": {
            "listen": str(address),
            "port": bootcfg_port,
            "data_dir": str(own / "bootcfg"),
            # the other deploy hosts' bootcfg: nodes report there when this one is down
            "peers": bootcfg_urls(plan, bootcfg_port, host)[1:],
        },
        "registry": {
            "address": str(address),
            "port": registry_port,
            "storage": str(own / "registry"),
        },
        "services": services,
        # Kolla in the lab: keystone alone, on the first server, the VIP outside DHCP's range
        "kolla": {
            "services": "minimal",
            "internal_vip": str(plan.site_net.network_address + LAB_VIP),
            # one server holds every role (kpc wants a machine in each of kolla's groups)
            "roles": {"first": 1}
            if len(plan.nodes) > 1
            else {"first": 1, "first_groups": ["control", "network", "compute", "monitoring"]},
            # the lab's own kolla config (globals, inventory, passwords), not the host's
            "config_dir": str(LabPaths(directory).kolla),
            # keepalived's haproxy check runs every 2 s and needs 10 passes in a row: a TCG
            # server cannot answer that fast, so the VIP never came up (one server: nothing
            # to fail over to anyway)
            "globals": {
                "keepalived_track_script_enabled": False,
            },
        },
        "ssh": {"user": "core", "private_key": str(ssh_private_key)},
        "paths": {
            "state_dir": str(own / "state"),
            "log_dir": str(own / "logs"),
        },
        # the web view shows each server's serial console (kpc web, with a web.password)
        "web": {"serial_logs": str(LabPaths(directory).servers)},
    }
    if plan.deploy_hosts > 1:  # one machine registry for every deploy host
        data["state"] = {"backend": "etcd", "etcd": {"endpoints": etcd_endpoints(plan, host)}}
    header = (
        f"# kpc site configuration for the virtual lab {plan.name!r} ({len(plan.servers)} "
        f"servers),\n# written by 'kpc lab up' in {directory}. Use it with:\n"
        f"#   export KPC_CONFIG={directory / 'kpc.yaml'}\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False)
