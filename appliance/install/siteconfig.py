"""The site config install-host writes when there is none: what it chose, nothing more. Pure."""

from __future__ import annotations

from appliance.install.address import HostAddress
from appliance.install.osrelease import TargetOs


def new_site_config(address: HostAddress, target: TargetOs) -> str:
    """YAML text for a site config with the management address and the OS pinned.

    Every other option keeps its default; ``kpc config show`` lists them all.
    """
    return (
        "# kpc site configuration, written by 'kpc install-host'.\n"
        "# Every option not listed here has its default; 'kpc config show' prints them all.\n"
        "\n"
        "# The network the servers PXE boot on; the deploy host serves proxy-DHCP, iPXE and\n"
        "# Ignition there (chosen by install-host: " + address.describe() + ").\n"
        "provisioning:\n"
        f"  interface: {address.interface}\n"
        f"  address: {address.address}\n"
        f"  subnet: {address.network}\n"
        "\n"
        "# The OS installed on the deploy host and later on every node: the same release.\n"
        "os:\n"
        f"  channel: {target.channel}\n"
        f"  version: {target.version!r}\n"
    )
