"""bootcfg's server layer: what a request means for the registry, below the HTTP handlers.

Each call takes a validated request (labels, the client's address), and in ONE store
transaction (``MachineStore.transact``) records that the machine asked, matches it against
the catalog, decides what to serve and records the resulting state. Handlers only
translate HTTP to these calls and their results back to HTTP; they never write the registry.

Transitions a request may cause (the rest are in ``appliance.state.rules``):

- any request with a ``mac=``: the discovery record (``rules.seen``);
- ``/ipxe`` (or ``/grub``) or ``/ignition`` answered with an installer profile: state
  ``installing``;
- ``/ipxe`` (or ``/grub``) answered with the rescue profile: state ``rescue``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.bootcfg.catalog import Catalog
from appliance.bootcfg.labels import Labels
from appliance.bootcfg.matching import RESCUE_PROFILE, Decision, Outcome, decide, is_installer
from appliance.bootcfg.service import Service
from appliance.state import rules
from appliance.state.model import Machine, MachineState
from appliance.state.store import Transition

IPXE = "ipxe"
GRUB = "grub"  # a boot endpoint like /ipxe, for GRUB clients (matchbox's /grub)
BOOT_ENDPOINTS = (IPXE, GRUB)
IGNITION = "ignition"
INSTALL_COMPLETE = "install-complete"
CHECKIN = "checkin"


@dataclass(frozen=True)
class Verdict:
    """What a request is answered with, and the registry record after it."""

    catalog: Catalog
    decision: Decision
    machine: Machine | None


def _served_state(endpoint: str, decision: Decision) -> MachineState | None:
    """The state serving ``decision`` on ``endpoint`` puts the machine in, if any."""
    profile = decision.profile
    if decision.outcome is not Outcome.PROFILE or profile is None:
        return None
    if is_installer(profile) and endpoint in (*BOOT_ENDPOINTS, IGNITION):
        return MachineState.INSTALLING
    if profile.id == RESCUE_PROFILE and endpoint in BOOT_ENDPOINTS:
        return MachineState.RESCUE
    return None


def serve(svc: Service, endpoint: str, labels: Labels, address: str | None) -> Verdict:
    """Record, match and decide a boot or config request (``/ipxe``, ``/ignition``, ...)."""
    catalog = svc.catalog
    ipxe = endpoint in BOOT_ENDPOINTS
    if labels.mac is None:
        return Verdict(catalog, decide(catalog, labels, None, ipxe=ipxe), None)
    mac = labels.mac
    now = svc.clock()

    def step(current: Machine | None) -> Transition[Verdict]:
        machine = rules.seen(
            current,
            mac,
            address=address,
            endpoint=endpoint,
            now=now,
            uuid=labels.get("uuid"),
            hostname=labels.get("hostname"),
            serial=labels.get("serial"),
        )
        decision = decide(catalog, labels, machine, ipxe=ipxe)
        state = _served_state(endpoint, decision)
        if state is not None and machine.state is not state:
            machine = rules.with_state(machine, state)
        detail = {"outcome": decision.outcome.value, "reason": decision.reason}
        if decision.profile is not None:
            detail["profile"] = decision.profile.id
        event = rules.request_event(endpoint, address, detail)
        return Transition(machine, Verdict(catalog, decision, machine), (event,))

    return svc.store.transact(mac, step, now)


def install_complete(svc: Service, mac: str, address: str | None) -> Machine:
    """The machine finished installing: boot ``local`` from now on (one transaction)."""
    now = svc.clock()

    def step(current: Machine | None) -> Transition[Machine]:
        machine = rules.seen(current, mac, address=address, endpoint=INSTALL_COMPLETE, now=now)
        machine = rules.install_completed(machine)
        return Transition(machine, machine, (rules.request_event(INSTALL_COMPLETE, address),))

    return svc.store.transact(mac, step, now)


def checkin(svc: Service, mac: str, facts: dict[str, Any], address: str | None) -> Machine:
    """An installed machine reports its facts (one transaction)."""
    return svc.store.check_in(mac, facts, address, svc.clock())
