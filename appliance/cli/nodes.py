"""`kpc nodes`: Machines kpc has seen: list, show, boot mode, SSH checks."""

from __future__ import annotations

import json
import time
from enum import StrEnum

import typer

from appliance.bootcfg.inventory import ansible_host, ansible_list
from appliance.cli.common import Cli, cli, confirm, emit_json, parse_mac, print_table, when
from appliance.errors import Aborted, StateError, UsageError
from appliance.state.backend import open_store
from appliance.state.model import BootMode, Event, Machine, MachineState
from appliance.state.store import MachineStore

group = typer.Typer(
    help="Machines kpc has seen: list, show, boot mode, SSH checks.", no_args_is_help=True
)


class InventoryFormat(StrEnum):
    ANSIBLE = "ansible"


def _store(c: Cli) -> MachineStore:
    return open_store(c.config())


def _as_dict(machine: Machine) -> dict[str, object]:
    return {
        "mac": machine.mac,
        "state": machine.state.value,
        "boot": machine.boot.value,
        "hostname": machine.hostname,
        "uuid": machine.uuid,
        "serial": machine.serial,
        "address": machine.management_address,
        "first_seen": machine.first_seen,
        "last_seen": machine.last_seen,
        "last_address": machine.last_address,
        "last_endpoint": machine.last_endpoint,
        "bmc_address": machine.bmc_address,
        "ssh_host_key": machine.ssh_host_key,
        "facts": machine.facts,
    }


def _require(store: MachineStore, mac: str) -> Machine:
    machine = store.get(mac)
    if machine is None:
        raise StateError(
            f"no machine with MAC {mac} in the registry",
            hint="'kpc nodes list' shows the machines kpc has seen",
        )
    return machine


@group.command("list")
def list_(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    state: MachineState | None = typer.Option(None, help="Only machines in this state."),
) -> None:
    """Every machine in the registry, by MAC."""
    c = cli(ctx)
    store = _store(c)
    try:
        machines = store.machines(state)
    finally:
        store.close()
    if as_json:
        emit_json([_as_dict(m) for m in machines])
        return
    if not machines:
        c.out.print("no machines" + (f" in state {state.value}" if state else ""))
        return
    rows = [
        [
            m.mac,
            m.state.value,
            m.boot.value,
            m.hostname or "-",
            m.management_address or "-",
            when(m.last_seen),
            m.last_endpoint or "-",
        ]
        for m in machines
    ]
    header = ["MAC", "STATE", "BOOT", "HOSTNAME", "ADDRESS", "LAST SEEN", "VIA"]
    print_table(c, header, rows, drop=("VIA", "LAST SEEN", "BOOT"))


def _event_line(event: Event) -> str:
    detail = " ".join(
        f"{k}={ascii(v) if isinstance(v, str) else v}" for k, v in sorted(event.detail.items())
    )
    return f"{when(event.time)}  {event.mac or '-':17}  {event.kind:9}  {detail}".rstrip()


@group.command()
def watch(
    ctx: typer.Context,
    interval: float = typer.Option(
        0.5,
        min=0.05,
        max=60.0,
        help="Seconds between looks at the registry (SQLite; etcd is watched).",
    ),
    count: int = typer.Option(0, min=0, help="Stop after this many changes (0: until Ctrl-C)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Print the registry's changes as they happen: requests, state and boot changes,
    check-ins, BMC records, removals — whoever made them (bootcfg, another kpc command)."""
    c = cli(ctx)
    store = _store(c)
    shown = 0
    try:
        cursor = store.event_cursor()
        c.err.print(f"watching the machine registry after change {cursor}", markup=False)
        while True:
            # etcd: a watch wakes this at once; SQLite: polled until ``interval`` passes
            for event in store.wait_changes(cursor, interval):
                cursor = event.id
                if as_json:
                    typer.echo(json.dumps({**event.__dict__, "detail": event.detail}))
                else:
                    typer.echo(_event_line(event))
                shown += 1
                if count and shown >= count:
                    return
    except KeyboardInterrupt:
        return
    finally:
        store.close()


@group.command()
def show(
    ctx: typer.Context, mac: str = typer.Argument(..., help="The machine's boot MAC.")
) -> None:
    """Everything kpc knows about one machine."""
    c = cli(ctx)
    store = _store(c)
    try:
        machine = _require(store, parse_mac(mac))
    finally:
        store.close()
    emit_json(_as_dict(machine))


@group.command("set-boot")
def set_boot(
    ctx: typer.Context,
    mac: str = typer.Argument(..., help="The machine's boot MAC."),
    mode: BootMode = typer.Argument(..., help="install | local | rescue"),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask (install erases the disk)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would change; change nothing."),
) -> None:
    """What the machine's next PXE boot does.

    install: reinstall Flatcar (ERASES the install disk on the next boot); local: boot the
    local disk; rescue: boot Flatcar live from the network with console autologin.
    """
    c = cli(ctx)
    address = parse_mac(mac)
    store = _store(c)
    try:
        machine = _require(store, address)
        change = f"{address}: boot mode {machine.boot.value} -> {mode.value}"
        if dry_run:
            c.out.print(f"would set {change}")
            return
        if (
            mode is BootMode.INSTALL
            and machine.boot is not BootMode.INSTALL
            and not confirm(
                c,
                f"{address} ({machine.hostname or 'no hostname'}) will ERASE its install disk "
                "and reinstall on its next PXE boot. Continue?",
                yes=yes,
            )
        ):
            raise Aborted("nothing changed", hint="pass --yes to confirm")
        store.set_boot(address, mode, time.time())
    finally:
        store.close()
    c.out.print(f"set {change}")


@group.command()
def forget(
    ctx: typer.Context,
    mac: str = typer.Argument(..., help="The machine's boot MAC."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would change; change nothing."),
) -> None:
    """Remove a machine from the registry.

    A forgotten machine that PXE boots again is new to kpc: it is discovered again and, by
    the default group, INSTALLED again (its disk erased).
    """
    c = cli(ctx)
    address = parse_mac(mac)
    store = _store(c)
    try:
        machine = _require(store, address)
        if dry_run:
            c.out.print(f"would forget {address} ({machine.state.value})")
            return
        question = (
            f"Forget {address} ({machine.hostname or 'no hostname'}, {machine.state.value})? "
            "If it PXE boots again it will be reinstalled."
        )
        if not confirm(c, question, yes=yes):
            raise Aborted("nothing changed", hint="pass --yes to confirm")
        store.forget(address)
    finally:
        store.close()
    c.out.print(f"forgot {address}")


@group.command()
def inventory(
    ctx: typer.Context,
    fmt: InventoryFormat = typer.Option(InventoryFormat.ANSIBLE, "--format", help="ansible"),
    list_all: bool = typer.Option(False, "--list", help="The whole inventory (the default)."),
    host: str | None = typer.Option(None, "--host", help="The variables of one host."),
) -> None:
    """The registry as an Ansible dynamic inventory (groups by state)."""
    c = cli(ctx)
    if list_all and host:
        raise UsageError("give --list or --host, not both")
    config = c.config()
    store = open_store(config)
    try:
        machines = store.machines()
    finally:
        store.close()
    if host is not None:
        data = ansible_host(machines, host, config.ssh.user)
    else:
        data = ansible_list(machines, config.ssh.user)
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="nodes")
