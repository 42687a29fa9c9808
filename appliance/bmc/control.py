"""The BMC use cases: which BMCs, with which credentials and protocol, doing what; and what
the registry learns from it.

- ``choose``: the inventory (``bmc.hosts`` + discovered BMCs) narrowed by the operator's
  targets and filters;
- ``resolve``: credentials (the CLI supplies a ``password_for`` callback, because asking is
  its job), the protocol of each host (``--protocol``, else the host's own, else
  ``bmc.protocol``: ``auto`` = Redfish where discovery found it, else IPMI), and how its TLS
  certificate is checked;
- ``run``: one action over a mixed fleet: the IPMI hosts on the IPMI engine and the Redfish
  hosts on the Redfish engine, at the same time, results in the order of the targets;
- ``serialised``: the registry's lock on each BMC an action changes, across deploy hosts;
- ``record``: certificates seen for the first time are pinned, inventories recorded.

Each driver is imported only when a host needs it (a Redfish-only run never loads pyghmi).
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace

from appliance.bmc.actions import Action
from appliance.bmc.jobs import Credentials, HostOutcome, Protocol, RunOptions, Target, Tls
from appliance.bmc.targets import Candidate, inventory, select
from appliance.config import Bmc as BmcSettings
from appliance.errors import UsageError
from appliance.state.model import Bmc
from appliance.state.store import MachineStore


@dataclass(frozen=True)
class TlsChoice:
    ca_bundle: str | None = None
    insecure: bool = False


def candidates(
    settings: BmcSettings, store: MachineStore | None, recorded: Sequence[Bmc] | None = None
) -> list[Candidate]:
    """The inventory: ``bmc.hosts`` then the BMCs the registry holds (or ``recorded``)."""
    if recorded is None:
        recorded = store.list_bmcs() if store is not None else []
    return inventory(settings.hosts, recorded)


def choose(
    known: Sequence[Candidate],
    targets: Sequence[str],
    only: Sequence[str],
    exclude: Sequence[str],
    recorded: Sequence[Bmc] = (),
) -> list[Candidate]:
    """The BMCs to act on. A BMC given by address that the registry only holds a pinned
    certificate for (never discovered, so not in the default set) keeps its pin."""
    chosen = select(known, targets, only=only, exclude=exclude)
    if not chosen:
        raise UsageError(
            "no BMCs to act on",
            hint="list them in bmc.hosts, run 'kpc bmc discover', or give addresses",
        )
    pins = {b.address: b.tls_fingerprint for b in recorded if b.tls_fingerprint}
    return [
        replace(c, fingerprint=pins[c.address])
        if c.fingerprint is None and c.address in pins
        else c
        for c in chosen
    ]


def protocol_of(candidate: Candidate, forced: Protocol | None, default: str) -> Protocol:
    if forced is not None:
        return forced
    if candidate.protocol is not None:
        return Protocol(candidate.protocol)
    if default != "auto":
        return Protocol(default)
    return Protocol.REDFISH if "redfish" in candidate.protocols else Protocol.IPMI


def resolve(
    chosen: Sequence[Candidate],
    settings: BmcSettings,
    *,
    user: str | None,
    password_for: Callable[[Candidate], str],
    protocol: Protocol | None = None,
    tls: TlsChoice = TlsChoice(),
) -> list[Target]:
    """Targets with credentials, protocol and TLS policy. ``password_for`` is asked once per
    host that has no password reference of its own (the caller may cache)."""
    default_user = user or settings.user
    ca = tls.ca_bundle or (str(settings.ca_bundle) if settings.ca_bundle else None)
    out = []
    for candidate in chosen:
        kind = protocol_of(candidate, protocol, settings.protocol)
        out.append(
            Target(
                candidate.address,
                Credentials(candidate.user or default_user, password_for(candidate)),
                port=candidate.port,
                name=candidate.name,
                protocol=kind,
                tls=Tls(pinned=candidate.fingerprint, ca_bundle=ca, insecure=tls.insecure),
            )
        )
    return out


def run(
    targets: Sequence[Target],
    action: Action,
    options: RunOptions,
    on_result: Callable[[HostOutcome], None] | None = None,
) -> list[HostOutcome]:
    """Run ``action`` on every target, each over its own protocol; outcomes in target order."""
    ipmi = [t for t in targets if t.protocol is Protocol.IPMI]
    redfish = [t for t in targets if t.protocol is Protocol.REDFISH]
    results: list[HostOutcome] = []
    lock = threading.Lock()

    def note(outcome: HostOutcome) -> None:
        with lock:
            if on_result is not None:
                on_result(outcome)

    failure: list[BaseException] = []

    def redfish_side() -> None:
        from appliance.bmc import redfish_jobs
        from appliance.drivers import redfish_client

        factory = redfish_jobs.job_for(action)
        try:
            done = redfish_client.run_jobs(((t, factory) for t in redfish), options, note)
        except BaseException as exc:  # handed to the calling thread
            failure.append(exc)
            return
        with lock:
            results.extend(done)

    thread = threading.Thread(target=redfish_side, name="redfish") if redfish else None
    if thread is not None:
        thread.start()
    try:
        if ipmi:
            from appliance.bmc import ipmi_jobs
            from appliance.drivers import ipmi as ipmi_driver

            factory = ipmi_jobs.job_for(action)
            done = ipmi_driver.run_jobs(((t, factory) for t in ipmi), options, note)
            with lock:
                results.extend(done)
    finally:
        if thread is not None:
            thread.join()
    if failure:
        raise failure[0]
    position = {id(t): i for i, t in enumerate(targets)}
    return sorted(results, key=lambda o: position.get(id(o.target), len(position)))


def serialised(
    store: MachineStore | None, targets: Sequence[Target], action: Action
) -> AbstractContextManager[None]:
    """Hold the registry's lock on each target BMC (``bmc/<address>``) while ``action`` runs,
    if it changes anything: two operators, or two deploy hosts sharing an etcd registry,
    never power-cycle the same server at once. The holder is named to whoever waits."""
    if store is None or not action.changes_state:
        return nullcontext()
    holder = f"{socket.gethostname()} pid {os.getpid()} ({action.describe()})"
    return store.hold([f"bmc/{t.address}" for t in targets], holder)


def record(store: MachineStore, outcomes: Sequence[HostOutcome], now: float) -> list[str]:
    """Pin certificates seen for the first time; record inventories. Lines for the operator."""
    notes = []
    known = {b.address for b in store.list_bmcs()}
    for outcome in outcomes:
        address = outcome.target.address
        if outcome.seen_fingerprint is not None:
            store.pin_bmc_cert(address, outcome.seen_fingerprint)
            notes.append(
                f"{address}: TLS certificate pinned on first use "
                f"(SHA-256 {outcome.seen_fingerprint[:16]}…)"
            )
        found = outcome.inventory
        if found is not None:
            if address not in known:  # inventory asked of a BMC given by address
                store.record_bmc(Bmc(address, protocols=(outcome.target.protocol.value,)), now)
                known.add(address)
            store.record_bmc_inventory(
                address,
                model=found.model,
                serial=found.serial,
                uuid=found.uuid,
                macs=found.macs,
                now=now,
            )
    return notes


def forget_cert(store: MachineStore, address: str) -> bool:
    """Forget a BMC's pinned certificate; False when none was pinned."""
    known = {b.address: b for b in store.list_bmcs()}
    if address not in known or known[address].tls_fingerprint is None:
        return False
    store.pin_bmc_cert(address, None)
    return True
