"""Proxy-DHCP config rendering (pure), checked by the real dnsmasq's syntax check."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

import pytest

from appliance.render.dnsmasq import ProxyDhcp, as_args, as_conf, proxy_dhcp_options
from tests.conftest import require_tool

PROXY = ProxyDhcp(
    interface="eth1",
    address=ipaddress.IPv4Address("10.20.0.2"),
    subnet=ipaddress.IPv4Network("10.20.0.0/22"),
    boot_url="http://10.20.0.2:8080/boot.ipxe",
)


def test_proxy_only_never_leases() -> None:
    options = proxy_dhcp_options(PROXY)
    ranges = [o for o in options if o.startswith("dhcp-range=")]
    assert ranges == ["dhcp-range=10.20.0.0,proxy,255.255.252.0"]
    assert "port=0" in options  # no DNS
    assert "leasefile-ro" in options
    assert not any(o.startswith(("dhcp-authoritative", "dhcp-host")) for o in options)
    assert "interface=eth1" in options and "bind-dynamic" in options


def test_firmware_is_chainloaded_and_ipxe_goes_to_bootcfg() -> None:
    options = proxy_dhcp_options(PROXY)
    services = [o.removeprefix("pxe-service=") for o in options if o.startswith("pxe-service=")]
    assert services == [
        "tag:!ipxe,x86PC,iPXE-BIOS,undionly.kpxe",
        "tag:!ipxe,x86-64_EFI,iPXE-UEFI,snponly.efi",
        "tag:ipxe,x86PC,bootcfg,http://10.20.0.2:8080/boot.ipxe",
        "tag:ipxe,x86-64_EFI,bootcfg,http://10.20.0.2:8080/boot.ipxe",
    ]
    assert "dhcp-userclass=set:ipxe,iPXE" in options
    assert "enable-tftp" in options and "tftp-root=/srv/tftp" in options


def test_refuses_what_dnsmasq_would_misread() -> None:
    with pytest.raises(ValueError, match="not inside subnet"):
        proxy_dhcp_options(ProxyDhcp("eth1", ipaddress.IPv4Address("10.9.0.1"), PROXY.subnet, "u"))
    with pytest.raises(ValueError, match="boot URL"):
        proxy_dhcp_options(ProxyDhcp("eth1", PROXY.address, PROXY.subnet, "http://x/a,b.ipxe"))


def test_args_and_conf_forms() -> None:
    options = proxy_dhcp_options(PROXY)
    assert as_args(options)[:2] == ["--keep-in-foreground", "--log-facility=-"]
    conf = as_conf(options)
    assert conf.startswith("#") and "\ndhcp-range=10.20.0.0,proxy,255.255.252.0\n" in conf


def test_real_dnsmasq_accepts_both_forms(tmp_path: Path) -> None:
    require_tool("dnsmasq")
    options = proxy_dhcp_options(PROXY)
    conf = tmp_path / "proxy.conf"
    conf.write_text(as_conf(options))
    for argv in (
        ["dnsmasq", "--test", f"--conf-file={conf}"],
        ["dnsmasq", "--test", "--conf-file=/dev/null", *as_args(options)],
    ):
        done = subprocess.run(argv, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "syntax check OK" in done.stderr + done.stdout
