"""The systemd units that start kpc's service containers on the deploy host at boot.

Stub: the containers work fills this in. ``kpc ignition render deployhost`` passes the result
to the template as ``services``; each item is ``{"name", "description", "exec_start",
"exec_stop"}`` and becomes the unit ``<name>.service`` (ignition/README.md).
"""

from __future__ import annotations

from appliance.config import SiteConfig


def systemd_services(config: SiteConfig) -> list[dict[str, str]]:
    """One entry per kpc service container to run at boot (none yet)."""
    del config
    return []
