"""What an operator may do from the web view, with the CLI's confirmation and dry-run rules.

Each action is planned first (``plan``: what it will do, to which machine or BMC, and the
warning the CLI would ask about); ``perform`` then runs it for real or as a dry run and
appends an audit event (who, what, when, dry run or not, the result) to the registry. A
dry run sends nothing and needs no BMC password.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from appliance.bmc import actions, control
from appliance.bmc.actions import Action, PowerAction
from appliance.bmc.jobs import HostOutcome, RunOptions, Target
from appliance.bmc.targets import Candidate
from appliance.config import SiteConfig
from appliance.errors import KpcError, SecretError, UsageError
from appliance.state.model import BootMode, EventKind, Machine
from appliance.state.store import MachineStore


@dataclass(frozen=True)
class Spec:
    label: str  # the button
    boot: BootMode | None = None
    power: str | None = None  # a PowerAction value, or "pxe"


ACTIONS: Mapping[str, Spec] = {
    "boot-local": Spec("Boot from disk", boot=BootMode.LOCAL),
    "boot-install": Spec("Reinstall on next PXE boot", boot=BootMode.INSTALL),
    "boot-rescue": Spec("Rescue on next PXE boot", boot=BootMode.RESCUE),
    "power-on": Spec("Power on", power="on"),
    "power-off": Spec("Power off", power="off"),
    "power-cycle": Spec("Power cycle", power="cycle"),
    "pxe": Spec("PXE boot once", power="pxe"),
}


@dataclass(frozen=True)
class Plan:
    action: str
    mac: str
    what: str  # one sentence: what will happen
    warning: str  # why to think twice ("" when harmless)
    bmc: Candidate | None = None


@dataclass(frozen=True)
class Result:
    ok: bool
    text: str
    dry_run: bool


Runner = Callable[[Sequence[Target], Action, RunOptions], list[HostOutcome]]


def _action(name: str) -> Action:
    return actions.PXE if name == "pxe" else actions.power(PowerAction(name))


def _bmc_of(machine: Machine, config: SiteConfig, store: MachineStore) -> Candidate:
    known = control.candidates(config.bmc, store)
    for candidate in known:
        if candidate.name == machine.mac or (
            machine.bmc_address and candidate.address == machine.bmc_address
        ):
            return candidate
    if machine.bmc_address:
        return Candidate(machine.bmc_address, source="machine")
    raise UsageError(
        f"kpc knows no BMC for {machine.mac}",
        hint="it learns it at check-in (bmc_address), from 'kpc bmc discover' with a Redfish "
        "inventory, or from bmc.hosts named after the machine's MAC",
    )


def plan(action: str, machine: Machine, config: SiteConfig, store: MachineStore) -> Plan:
    spec = ACTIONS.get(action)
    if spec is None:
        raise UsageError(f"unknown action {action!r}", hint=f"one of {', '.join(ACTIONS)}")
    name = f"{machine.mac} ({machine.hostname or 'no hostname'})"
    if spec.boot is not None:
        warning = ""
        if spec.boot is BootMode.INSTALL and machine.boot is not BootMode.INSTALL:
            warning = "It will ERASE its install disk and reinstall on its next PXE boot."
        return Plan(
            action, machine.mac, f"set boot mode of {name}: {machine.boot} -> {spec.boot}", warning
        )
    assert spec.power is not None
    bmc = _bmc_of(machine, config, store)
    warning = ""
    if spec.power in ("off", "cycle", "pxe"):
        warning = "Whatever runs on the machine is cut off without a clean shutdown."
    if spec.power == "pxe" and machine.boot is BootMode.INSTALL:
        warning += " Its boot mode is install: it will ERASE its disk and reinstall."
    return Plan(
        action,
        machine.mac,
        f"{_action(spec.power).describe()} {name} via BMC {bmc.label}",
        warning,
        bmc,
    )


def _target(candidate: Candidate, config: SiteConfig, environ: Mapping[str, str]) -> Target:
    def password_for(chosen: Candidate) -> str:
        ref = chosen.password or config.bmc.password
        try:
            return ref.resolve(environ)
        except SecretError as exc:
            raise SecretError(f"BMC {chosen.label}: {exc.message}", hint=exc.hint) from None

    (target,) = control.resolve([candidate], config.bmc, user=None, password_for=password_for)
    return target


def perform(
    chosen: Plan,
    *,
    who: str,
    dry_run: bool,
    config: SiteConfig,
    store: MachineStore,
    environ: Mapping[str, str],
    runner: Runner = control.run,
    clock: Callable[[], float] = time.time,
) -> Result:
    """Run (or dry-run) a planned action and audit it. Errors are audited, then raised."""
    spec = ACTIONS[chosen.action]
    audit: dict[str, Any] = {
        "who": who,
        "via": "web",
        "action": chosen.action,
        "what": chosen.what,
        "dry_run": dry_run,
        "power": spec.power is not None,
    }

    def record(ok: bool, text: str) -> Result:
        store.record_event(
            chosen.mac, EventKind.ACTION, {**audit, "ok": ok, "result": text}, clock()
        )
        return Result(ok, text, dry_run)

    if dry_run:
        return record(True, f"dry run: would {chosen.what}; nothing was changed or sent")
    try:
        if spec.boot is not None:
            store.set_boot(chosen.mac, spec.boot, clock())
            return record(True, f"done: {chosen.what}")
        assert spec.power is not None and chosen.bmc is not None
        target = _target(chosen.bmc, config, environ)
        options = RunOptions(fanout=1, timeout=config.bmc.timeout)
        action = _action(spec.power)
        with control.serialised(store, [target], action):
            (outcome,) = runner([target], action, options)
    except KpcError as exc:
        record(False, f"failed: {exc.message}")
        raise
    if outcome.ok:
        return record(True, f"done: {outcome.result}")
    failure = outcome.failure.value if outcome.failure else "error"
    return record(False, f"failed ({failure}): {outcome.error or 'no details'}")
