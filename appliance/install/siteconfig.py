"""The site config install-host writes when there is none. Pure.

It is the same fully commented file ``kpc config init`` writes, with the management address
install-host chose and the OS channel and version pinned to what it installs.
"""

from __future__ import annotations

from appliance.install.address import HostAddress
from appliance.install.osrelease import TargetOs
from appliance.render.config_template import InitValues, config_template


def new_site_config(address: HostAddress, target: TargetOs, address_note: str) -> str:
    """YAML text of a complete site config for this deploy host."""
    values = InitValues(
        interface=address.interface,
        address=str(address.address),
        subnet=str(address.network),
        network_note=f"{address.describe()}, chosen by install-host: {address_note}",
        os_version=target.version,
        os_note=(
            f"install-host installed {target.flavor} {target.version} ({target.channel}) on "
            "the deploy host; the nodes get the same release."
        ),
        os_channel=target.channel,
    )
    return config_template(values)
