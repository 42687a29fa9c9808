"""What kpc calls a machine, decided once: SSH output, the Ansible inventory bootcfg serves
and Kolla's inventory all use these."""

from __future__ import annotations

import re

from appliance.state.model import Machine

HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # one DNS label (RFC 1123)
UNNAMED = frozenset({"localhost", "localhost4", "localhost6"})


def hostname_of(machine: Machine) -> str | None:
    """The machine's own name: the hostname it checked in with (what it says now), else the
    one it gave when it booted; its first label, lower case. None if it has no valid one:
    "localhost" (what a node with no hostname of its own says) names no machine, and in an
    Ansible inventory it would be the deploy host itself."""
    for candidate in (machine.facts.get("hostname"), machine.hostname):
        if isinstance(candidate, str):
            short = candidate.strip().lower().split(".")[0]
            if HOSTNAME_RE.fullmatch(short) and short not in UNNAMED:
                return short
    return None


def fallback_name(mac: str) -> str:
    """The name of a machine without a hostname (``node-525400c61201``)."""
    return "node-" + mac.replace(":", "")


def inventory_name(machine: Machine) -> str:
    """A name for inventories: its hostname, else one made from its MAC."""
    return hostname_of(machine) or fallback_name(machine.mac)
