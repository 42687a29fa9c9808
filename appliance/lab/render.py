"""Pure renderers for the lab: the site router's dnsmasq command, the nftables guard, the
simulated BMC's command, and the lab's site configuration."""

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
    """The site router: plain DHCP (no PXE options at all) plus IPv6 router advertisements.

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
        f"--dhcp-leasefile={leases}",
        f"--log-facility={log}",
        "--log-dhcp",
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
) -> str:
    """The kpc site configuration for this lab (what ``kpc up`` and friends read)."""
    data = {
        "provisioning": {
            "interface": plan.host_site_link,
            "address": str(plan.deploy_address),
            "subnet": str(plan.site_net),
        },
        "bmc": {
            "networks": [str(plan.bmc_net)],
            # each BMC named by its server's boot MAC: 'kpc pxe-all --only MAC' picks it
            "hosts": [{"address": str(s.bmc_address), "name": s.mac} for s in plan.servers],
            "user": bmc_user,
            "password": {"file": str(bmc_password_file)},
            "timeout": 5.0,
        },
        "os": {"version": os_version},
        "bootcfg": {
            "listen": str(plan.deploy_address),
            "port": bootcfg_port,
            "data_dir": str(directory / "bootcfg"),
        },
        "registry": {
            "address": str(plan.deploy_address),
            "port": registry_port,
            "storage": str(directory / "registry"),
        },
        "services": {"prefix": services_prefix},
        # Kolla in the lab: keystone alone, on the first server, the VIP outside DHCP's range
        "kolla": {
            "services": "minimal",
            "internal_vip": str(plan.site_net.network_address + LAB_VIP),
            # one server holds every role (kpc wants a machine in each of kolla's groups)
            "roles": {"first": 1}
            if len(plan.servers) > 1
            else {"first": 1, "first_groups": ["control", "network", "compute", "monitoring"]},
            # the lab's own kolla config (globals, inventory, passwords), not the host's
            "config_dir": str(directory / "kolla"),
            # no NTP server is reachable from the lab (nothing leaves this machine): kolla's
            # "clock synchronized" precheck cannot pass there (a real rack keeps it)
            "globals": {"prechecks_enable_host_ntp_checks": False},
        },
        "ssh": {"user": "core", "private_key": str(ssh_private_key)},
        "paths": {
            "state_dir": str(directory / "state"),
            "log_dir": str(directory / "logs"),
        },
        # the web view shows each server's serial console (kpc web, with a web.password)
        "web": {"serial_logs": str(LabPaths(directory).servers)},
    }
    header = (
        f"# kpc site configuration for the virtual lab {plan.name!r} ({len(plan.servers)} "
        f"servers),\n# written by 'kpc lab up' in {directory}. Use it with:\n"
        f"#   export KPC_CONFIG={directory / 'kpc.yaml'}\n"
    )
    return header + yaml.safe_dump(data, sort_keys=False)
