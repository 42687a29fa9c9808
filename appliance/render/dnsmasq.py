"""Proxy-DHCP dnsmasq configuration, rendered from site values. Pure: no I/O.

The deploy host never hands out addresses: the site's own DHCP server does. dnsmasq runs in
proxy mode (RFC 4578 / PXE 2.1 "proxy DHCP"): it answers PXE clients with boot information
only. Firmware PXE clients are chainloaded over TFTP into iPXE (BIOS ``undionly.kpxe``, UEFI
``snponly.efi``); iPXE, recognised by its user class ``iPXE``, is sent to bootcfg's
``/boot.ipxe`` script. DNS is off (``port=0``).

The same option list renders either as dnsmasq command-line arguments (what the container
runs) or as a dnsmasq.conf text (for people reading it).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

# Client system architectures (RFC 4578 option 93) as dnsmasq names them in pxe-service.
ARCH_BIOS = "x86PC"  # 0
ARCH_UEFI_X64 = "x86-64_EFI"  # 7 (9 is mapped to the same name by dnsmasq)

# Loaders from Debian's ipxe package, copied into the TFTP root of the dnsmasq image.
BIOS_LOADER = "undionly.kpxe"
UEFI_LOADER = "snponly.efi"
TFTP_ROOT = "/srv/tftp"

IPXE_USER_CLASS = "iPXE"  # option 77 sent by iPXE
IPXE_TAG = "ipxe"

_SAFE_VALUE = re.compile(r"^[^\s,\"'#]+$")


@dataclass(frozen=True)
class ProxyDhcp:
    """What the proxy-DHCP configuration depends on."""

    interface: str
    address: ipaddress.IPv4Address  # the deploy host on the provisioning network
    subnet: ipaddress.IPv4Network
    boot_url: str  # where iPXE fetches its script: {bootcfg_url}/boot.ipxe
    tftp_root: str = TFTP_ROOT
    log_dhcp: bool = True


def _checked(what: str, value: str) -> str:
    if not _SAFE_VALUE.match(value):
        raise ValueError(
            f"{what} {value!r} cannot go into a dnsmasq option (spaces, commas, quotes)"
        )
    return value


def proxy_dhcp_options(p: ProxyDhcp) -> list[str]:
    """The dnsmasq options (``name`` or ``name=value``), in a stable order."""
    if p.address not in p.subnet:
        raise ValueError(f"address {p.address} is not inside subnet {p.subnet}")
    interface = _checked("interface", p.interface)
    url = _checked("boot URL", p.boot_url)
    root = _checked("TFTP root", p.tftp_root)
    options = [
        "keep-in-foreground",
        "log-facility=-",  # stderr, so `docker logs` has it
        "port=0",  # no DNS
        f"interface={interface}",
        # per-interface sockets, and an interface that is not there yet (at boot) is waited
        # for instead of being fatal
        "bind-dynamic",
        f"dhcp-range={p.subnet.network_address},proxy,{p.subnet.netmask}",
        "leasefile-ro",  # proxy mode keeps no leases; never write a lease file
        "enable-tftp",
        f"tftp-root={root}",
        f"dhcp-userclass=set:{IPXE_TAG},{IPXE_USER_CLASS}",
        # firmware PXE (not yet iPXE): chainload iPXE over TFTP
        f"pxe-service=tag:!{IPXE_TAG},{ARCH_BIOS},iPXE-BIOS,{BIOS_LOADER}",
        f"pxe-service=tag:!{IPXE_TAG},{ARCH_UEFI_X64},iPXE-UEFI,{UEFI_LOADER}",
        # iPXE: fetch bootcfg's script over HTTP
        f"pxe-service=tag:{IPXE_TAG},{ARCH_BIOS},bootcfg,{url}",
        f"pxe-service=tag:{IPXE_TAG},{ARCH_UEFI_X64},bootcfg,{url}",
    ]
    if p.log_dhcp:
        options.append("log-dhcp")
    return options


def as_args(options: list[str]) -> list[str]:
    """Options as dnsmasq command-line arguments (``--name=value``)."""
    return [f"--{option}" for option in options]


def as_conf(options: list[str]) -> str:
    """Options as a dnsmasq.conf text."""
    header = "# kpc proxy-DHCP (generated; no leases are ever handed out)\n"
    return header + "".join(f"{option}\n" for option in options)
