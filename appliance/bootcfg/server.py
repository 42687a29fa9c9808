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

import hmac
import logging
from dataclasses import dataclass
from typing import Any

from appliance.bootcfg.catalog import Catalog, Profile
from appliance.bootcfg.labels import Labels
from appliance.bootcfg.matching import RESCUE_PROFILE, Decision, Outcome, decide, is_installer
from appliance.bootcfg.service import Service
from appliance.drivers import sshsig
from appliance.errors import RegistryUnavailable
from appliance.keys import parse_line
from appliance.state import rules
from appliance.state.model import BootMode, Machine, MachineState
from appliance.state.store import Transition

IPXE = "ipxe"
GRUB = "grub"  # a boot endpoint like /ipxe, for GRUB clients (matchbox's /grub)
BOOT_ENDPOINTS = (IPXE, GRUB)
IGNITION = "ignition"
INSTALL_COMPLETE = "install-complete"
CHECKIN = "checkin"
CHECKIN_NAMESPACE = "kpc-checkin"  # ssh-keygen -Y sign -n kpc-checkin
CHECKIN_WINDOW = 900  # seconds a signed check-in's time may differ from this host's clock
PER_MACHINE = "per-machine"


class Forbidden(Exception):
    """A node's write that its credentials do not allow; nothing was changed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SignedCheckin:
    """What proves a check-in: the node's time and its SSH host key's signature (SSHSIG,
    namespace ``kpc-checkin``) over ``checkin_message``."""

    time: int
    signature: str


def checkin_message(mac: str, time: int, body: bytes) -> bytes:
    """The bytes a node signs: ``kpc-checkin``, its MAC (lower case, colons) and its time on
    lines of their own, then the request body exactly as sent."""
    return f"{CHECKIN_NAMESPACE}\n{mac}\n{time}\n".encode() + body


log = logging.getLogger("kpc.bootcfg")


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
    if svc.store.get(mac) is None:
        _admit_new(svc, mac)

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

    try:
        return svc.store.transact(mac, step, now)
    except RegistryUnavailable:
        verdict = _unrecorded(svc, endpoint, labels)
        if verdict is None:
            raise
        return verdict


def _unrecorded(svc: Service, endpoint: str, labels: Labels) -> Verdict | None:
    """The registry cannot take the request's record (e.g. etcd without quorum): answer a
    known machine from its last-read record, if the answer changes nothing that must be
    recorded first (booting locally, a config it already has); else ``None`` (a 503, the
    node retries). An install is never started from a record that may be stale."""
    assert labels.mac is not None
    machine = svc.store.get(labels.mac)
    if machine is None:
        return None
    catalog = svc.catalog
    decision = decide(catalog, labels, machine, ipxe=endpoint in BOOT_ENDPOINTS)
    state = _served_state(endpoint, decision)
    if state is not None and state is not machine.state:
        return None
    log.warning(
        "%s for %s answered from its last-read record (registry unavailable)", endpoint, labels.mac
    )
    return Verdict(catalog, decision, machine)


def _admit_new(svc: Service, mac: str) -> None:
    """Bound what unauthenticated requests for unknown MACs can add to the registry: at most
    ``max_unknown`` machines that were never installed, and a rate of new ones."""
    pending = [
        m
        for m in svc.store.machines()
        if m.boot is BootMode.INSTALL
        and m.state in (MachineState.DISCOVERED, MachineState.INSTALLING)
    ]
    if len(pending) >= svc.max_unknown:
        raise RegistryUnavailable(
            f"not recording new machine {mac}: {len(pending)} machines are waiting to be "
            f"installed, the most bootcfg.max_unknown allows",
            hint="'kpc nodes forget MAC' removes machines that will never install",
        )
    if not svc.new_machines.take():
        raise RegistryUnavailable(
            f"not recording new machine {mac}: more new MACs than "
            "bootcfg.new_machines_per_minute allows",
        )


def installer_token(svc: Service, profile: Profile | None, machine: Machine | None) -> str:
    """The token a served config may carry (template variable ``bootcfg_token``): with
    per-machine authentication, only an installer config for a machine in boot mode
    ``install`` carries that machine's own install token; nothing else carries any."""
    if svc.node_auth != PER_MACHINE:
        return svc.token or ""
    if profile is None or not is_installer(profile) or machine is None:
        return ""
    if machine.boot is not BootMode.INSTALL:
        return ""
    return machine.install_token or ""


def _host_key(text: str | None) -> str | None:
    """A reported SSH host public key as "type base64" (comment dropped); Forbidden-free:
    a malformed key is the node's bad request."""
    if text is None:
        return None
    try:
        key = parse_line(text.strip())
    except ValueError as exc:
        raise ValueError(f"host_key: {exc}") from None
    return " ".join(key.line.split()[:2])


def install_complete(
    svc: Service,
    mac: str,
    address: str | None,
    *,
    token: str | None = None,
    host_key: str | None = None,
) -> Machine:
    """The machine finished installing: boot ``local`` from now on, its reported SSH host key
    recorded (one transaction). Per-machine authentication: only with the install token
    minted for this machine's current install; ``Forbidden`` otherwise."""
    now = svc.clock()
    key = _host_key(host_key)
    per_machine = svc.node_auth == PER_MACHINE

    def step(current: Machine | None) -> Transition[Machine]:
        if per_machine:
            _check_install_token(mac, current, token, key)
            assert current is not None
            if current.boot is BootMode.LOCAL:  # a retry of an acknowledged report
                return Transition(None, current)
        machine = rules.seen(current, mac, address=address, endpoint=INSTALL_COMPLETE, now=now)
        machine = rules.install_completed(machine, key)
        return Transition(machine, machine, (rules.request_event(INSTALL_COMPLETE, address),))

    return svc.store.transact(mac, step, now)


def _check_install_token(
    mac: str, current: Machine | None, token: str | None, key: str | None
) -> None:
    if current is None:
        raise Forbidden(f"{mac} is not a machine kpc is installing")
    if key is None:
        raise Forbidden("install-complete must report the node's SSH host key (host_key)")
    if (
        current.boot is BootMode.LOCAL
        and current.state is MachineState.INSTALLED
        and current.ssh_host_key == key
    ):
        return  # the same report again (its answer was lost): nothing changes
    if current.boot is not BootMode.INSTALL or current.install_token is None:
        raise Forbidden(f"{mac} is in boot mode {current.boot.value}, not being installed")
    if token is None or not hmac.compare_digest(token.encode(), current.install_token.encode()):
        raise Forbidden(f"not the install token of {mac}'s current install")


def checkin(
    svc: Service,
    mac: str,
    facts: dict[str, Any],
    address: str | None,
    *,
    body: bytes = b"",
    signed: SignedCheckin | None = None,
) -> Machine:
    """An installed machine reports its facts (one transaction). Per-machine
    authentication: only a machine with a recorded SSH host key, with a fresh signature by
    that key over ``checkin_message``; ``Forbidden`` otherwise."""
    now = svc.clock()
    if svc.node_auth != PER_MACHINE:
        return svc.store.check_in(mac, facts, address, now)
    current = svc.store.get(mac)
    key = _verified_key(mac, current, body, signed, now)

    def step(machine: Machine | None) -> Transition[Machine]:
        if machine is None or machine.ssh_host_key != key:
            raise Forbidden(f"{mac}'s recorded SSH host key changed during the check-in")
        after = rules.checked_in(machine, facts, address, now)
        return Transition(after, after, (rules.checkin_event(address),))

    return svc.store.transact(mac, step, now)


def _verified_key(
    mac: str, machine: Machine | None, body: bytes, signed: SignedCheckin | None, now: float
) -> str:
    if machine is None:
        raise Forbidden(f"{mac} is not a machine kpc installed")
    if machine.ssh_host_key is None:
        raise Forbidden(
            f"no SSH host key is recorded for {mac}: it reports one at install-complete "
            f"(reinstall it with 'kpc nodes set-boot {mac} install')"
        )
    if signed is None:
        raise Forbidden("check-ins must be signed with the node's SSH host key")
    if abs(signed.time - now) > CHECKIN_WINDOW:
        raise Forbidden(
            f"the check-in's time is {signed.time - now:+.0f} s from this host's clock "
            f"(at most {CHECKIN_WINDOW} s either way; is the node's clock right?)"
        )
    message = checkin_message(mac, signed.time, body)
    try:
        sshsig.verify(machine.ssh_host_key, CHECKIN_NAMESPACE, message, signed.signature)
    except sshsig.SignatureError as exc:
        raise Forbidden(f"check-in signature refused: {exc}") from None
    return machine.ssh_host_key
