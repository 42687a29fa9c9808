"""Shared test data for the Kolla tests: a site config and machines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from appliance.config import SiteConfig, parse_config
from appliance.state.model import Machine, MachineState

# A cut-down copy of the shape of kolla-ansible's multinode inventory (its real one is read
# from the deployer image in the lab tests).
MULTINODE = """\
# These initial groups are the only groups required to be modified.
[control]
control01

[network]
network01

[compute]
compute01

[monitoring]
monitoring01

[storage]
storage01

[deployment]
localhost       ansible_connection=local

[baremetal:children]
control
network
compute
storage
monitoring

[common:children]
control
network
compute
storage
monitoring

[memcached:children]
control
"""


def site(**sections: Any) -> SiteConfig:
    data: dict[str, Any] = {
        "provisioning": {"interface": "eth0", "address": "10.0.0.1", "subnet": "10.0.0.0/24"},
        "kolla": {"internal_vip": "10.0.0.250", "config_dir": "/tmp/kpch-unused/kolla"},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return parse_config(yaml.safe_dump(data), source="test.yaml")


def machine(
    n: int,
    *,
    state: MachineState = MachineState.READY,
    os_name: str = "Flatcar Container Linux by Kinvolk",
    hostname: str | None = None,
    address: str | None = "",
    first_seen: float | None = None,
    host_key: str | None = None,
) -> Machine:
    mac = f"52:54:00:00:00:{n:02x}"
    addr = f"10.0.0.{10 + n}" if address == "" else address
    facts: dict[str, Any] = {"hostname": hostname or f"node{n}", "os": {"name": os_name}}
    if addr:
        facts["address"] = addr
    return Machine(
        mac=mac,
        state=state,
        first_seen=float(n) if first_seen is None else first_seen,
        facts=facts,
        ssh_host_key=host_key,
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
