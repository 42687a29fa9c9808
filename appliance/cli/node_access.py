"""`kpc nodes check|exec|ssh|forget-hostkey`: SSH access to provisioned nodes.

The commands join the ``nodes`` group of ``appliance.cli.nodes``. ``print_report`` is also
what the Kolla commands show when the fitness gate stops them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from appliance.cli.common import Cli, cli, emit_json, parse_mac
from appliance.cli.nodes import group
from appliance.drivers.ssh import HostKey, exec_program
from appliance.errors import KpcError, StateError, UsageError
from appliance.nodes.access import AccessError, SshSettings, open_session, ssh_settings
from appliance.nodes.checks import GIB, Check, Policy, Status
from appliance.nodes.execute import (
    ExecOutcome,
    exec_nodes,
    join_command,
    key_sightings,
)
from appliance.nodes.gate import NodesUnfit, check_fitness
from appliance.nodes.hostkeys import forget_host_key, record_first_use, write_known_hosts
from appliance.nodes.interactive import known_hosts_path, ssh_argv
from appliance.nodes.report import CheckReport, HostKeyStatus, NodeReport
from appliance.nodes.targets import Target, select_targets
from appliance.state.backend import open_store
from appliance.state.store import MachineStore

WIDE = 200  # columns for the table when the output is not a terminal
STATUS_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}


class ExecFailed(KpcError):
    """The command failed (or could not run) on some nodes."""

    def __init__(self, failed: list[ExecOutcome], total: int) -> None:
        lines = [f"{o.target.name} ({o.target.mac}): {o.reason}" for o in failed]
        super().__init__(
            f"the command failed on {len(failed)} of {total} nodes:\n  " + "\n  ".join(lines),
            hint=next((o.failure.hint for o in failed if o.failure and o.failure.hint), None),
        )


@contextmanager
def _store(c: Cli) -> Iterator[MachineStore]:
    store = open_store(c.config())
    try:
        yield store
    finally:
        store.close()


def _settings(c: Cli, timeout: float | None, fanout: int | None) -> SshSettings:
    return ssh_settings(c.config(), c.environ, timeout=timeout, fanout=fanout)


# --- rendering (also used by `kpc kolla`) ---------------------------------------------------


def _cell(report: NodeReport, check: Check) -> str:
    for result in report.checks:
        if result.check is check:
            style = STATUS_STYLE[result.status]
            return f"[{style}]{escape(result.summary)}[/]"
    return "[dim]-[/]"


def _key_cell(report: NodeReport) -> str:
    if report.host_key_fingerprint is None:
        return "[dim]-[/]"
    fp = escape(report.host_key_fingerprint.removeprefix("SHA256:")[:12])
    if report.host_key_status is HostKeyStatus.CHANGED:
        return f"[bold red]CHANGED {fp}[/]"
    if report.host_key_status is HostKeyStatus.RECORDED:
        return f"{fp} [cyan](new)[/]"
    if report.host_key_status is HostKeyStatus.UNTRUSTED:
        return f"{fp} [yellow](not recorded)[/]"
    return fp


def report_table(report: CheckReport) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for title in ("NODE", "ADDRESS", "SSH", "HOST KEY", "OS", "DOCKER", "PYTHON", "CLOCK"):
        table.add_column(title, overflow="fold")
    table.add_column("FREE /", overflow="fold")
    for node in report.nodes:
        failure = node.failure
        ssh = "[green]ok[/]" if failure is None else f"[bold red]{escape(failure.kind)}[/]"
        table.add_row(
            escape(node.target.name),
            escape(node.target.address or "-"),
            ssh,
            _key_cell(node),
            _cell(node, Check.OS),
            _cell(node, Check.DOCKER),
            _cell(node, Check.PYTHON),
            _cell(node, Check.CLOCK),
            _cell(node, Check.DISK),
        )
    return table


def print_report(console: Console, report: CheckReport) -> None:
    """The check table, then one line per problem (failures and warnings). Off a terminal
    (a pipe, a log) the table is not squeezed into 80 columns."""
    if console.is_terminal:
        console.print(report_table(report))
    else:
        Console(file=console.file, width=WIDE, highlight=False).print(report_table(report))
    for node in report.nodes:
        who = f"{escape(node.target.name)} ({node.target.mac})"
        if node.failure is not None:
            console.print(f"[bold red]✗[/] {who}: {escape(node.reason)}")
            if node.failure.hint:
                console.print(f"    hint: {escape(node.failure.hint)}")
            continue
        for result in node.checks:
            if result.status is not Status.OK:
                mark = "[bold red]✗[/]" if result.status is Status.FAIL else "[yellow]![/]"
                console.print(f"{mark} {who}: {result.check}: {escape(result.detail)}")
    fit = sum(1 for n in report.nodes if n.fit)
    console.print(f"{fit} of {len(report.nodes)} nodes fit")


# --- commands -------------------------------------------------------------------------------


def check(
    ctx: typer.Context,
    macs: list[str] = typer.Argument(
        None, metavar="MAC", help="Machines to check (default: every ready machine)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    timeout: float | None = typer.Option(
        None, "--timeout", help="Seconds for connecting and logging in (default: ssh.timeout)."
    ),
    fanout: int | None = typer.Option(
        None, "--fanout", min=1, help="Nodes checked at once (default: ssh.fanout)."
    ),
    min_free_gib: float = typer.Option(
        Policy.min_free_bytes / GIB, "--min-free-gib", help="Free space needed on /."
    ),
    max_clock_offset: float = typer.Option(
        Policy.max_clock_offset, "--max-clock-offset", help="Seconds a clock may be off."
    ),
    optional: list[Check] = typer.Option(
        [], "--optional", help="A check whose failure only warns (repeatable)."
    ),
) -> None:
    """Check that nodes accept kpc's SSH keys and are fit for Kolla.

    Per node: reachable, host key (recorded on first use; a changed key fails), OS, Docker running, Python, clock offset from this host, free space on /. Exits non-zero if any node fails, with the reason.
    """  # noqa: E501
    c = cli(ctx)
    settings = _settings(c, timeout, fanout)
    policy = Policy(
        required=frozenset(Check) - frozenset(optional),
        min_free_bytes=int(min_free_gib * GIB),
        max_clock_offset=max_clock_offset,
    )
    with _store(c) as store:
        report = check_fitness(store, settings, macs=macs or (), policy=policy)
    if as_json:
        emit_json(report.as_json())
    else:
        print_report(c.out, report)
    if not report.fit:
        raise NodesUnfit(report)


def forget_hostkey(
    ctx: typer.Context, mac: str = typer.Argument(..., help="The machine's MAC address.")
) -> None:
    """Forget a machine's recorded SSH host key (after a reinstall outside kpc).

    The next login records whatever key the node presents.
    """
    c = cli(ctx)
    with _store(c) as store:
        before = store.get(parse_mac(mac))
        forget_host_key(store, mac)
    old = before.ssh_host_key if before else None
    if old:
        try:
            fp = HostKey.parse(old).fingerprint
        except ValueError:
            fp = "an unreadable key"
        c.out.print(f"forgot the host key of {before.mac if before else mac} ({fp})")
    else:
        c.out.print(f"{parse_mac(mac)} had no recorded host key")
    c.out.print("the next login records the key the node presents")


def _words(command: list[str] | None) -> list[str]:
    """The remote command's words. Once a positional argument is seen, click passes a
    later ``--`` through as a word: drop it."""
    words = list(command or ())
    return words[1:] if words[:1] == ["--"] else words


def exec_(
    ctx: typer.Context,
    command: list[str] = typer.Argument(
        ..., metavar="COMMAND", help="The command (after --), run by each node's shell."
    ),
    only: str | None = typer.Option(
        None,
        "--only",
        metavar="PATTERN",
        help="Only nodes whose MAC, hostname or address matches (shell wildcards).",
    ),
    collect: bool = typer.Option(
        False, "--collect", help="Print each node's output as one block at the end."
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", help="Seconds the command may run on each node (default 60)."
    ),
    fanout: int | None = typer.Option(None, "--fanout", min=1, help="Nodes at once."),
) -> None:
    """Run a command on every ready node in parallel.

    Output is streamed with a node prefix (or collected with --collect). As with ssh, the words are joined with spaces and run by each node's shell. Exits non-zero if the command failed or could not run on any node.
    """  # noqa: E501
    c = cli(ctx)
    settings = _settings(c, None, fanout)
    line = join_command(_words(command))
    if not line.strip():
        raise UsageError("no command given", hint="kpc nodes exec -- uptime")
    with _store(c) as store:
        targets = select_targets(store, (), only)
        width = max(len(t.name) for t in targets)
        lock = threading.Lock()

        def show(target: Target, stream: str, text: str) -> None:
            console = c.out if stream == "stdout" else c.err
            with lock:
                console.print(f"{escape(target.name.ljust(width))} | {escape(text)}")

        outcomes = exec_nodes(
            targets, settings, line, timeout=timeout, on_line=None if collect else show
        )
        record_first_use(store, key_sightings(outcomes))
    if collect:
        for outcome in outcomes:
            status = outcome.reason or "exit 0"
            c.out.print(
                f"[bold]=== {escape(outcome.target.name)} ({outcome.target.mac}): "
                f"{escape(status)} ===[/]"
            )
            if outcome.stdout:
                c.out.print(escape(outcome.stdout.rstrip("\n")))
            if outcome.stderr:
                c.out.print("[dim]--- stderr ---[/]")
                c.out.print(escape(outcome.stderr.rstrip("\n")))
    failed = [o for o in outcomes if not o.ok]
    ok = len(outcomes) - len(failed)
    c.err.print(f"{ok} of {len(outcomes)} nodes succeeded")
    if failed:
        raise ExecFailed(failed, len(outcomes))


def ssh(
    ctx: typer.Context,
    mac: str = typer.Argument(..., help="The machine's MAC address."),
    command: list[str] = typer.Argument(
        None, metavar="COMMAND", help="Run this (after --) instead of a login shell."
    ),
) -> None:
    """Open an SSH session on one node, with strict host key checking.

    kpc writes a known_hosts file from the keys it recorded and runs the system ssh with it. A node without a recorded key is first reached by kpc itself, which records its key.
    """  # noqa: E501
    c = cli(ctx)
    config = c.config()
    settings = _settings(c, None, None)
    normal = parse_mac(mac)
    with _store(c) as store:
        machine = store.get(normal)
        if machine is None:
            raise StateError(
                f"no machine with MAC {normal} in the registry",
                hint="'kpc nodes list' shows the machines kpc knows",
            )
        target = Target.from_machine(machine)
        if not target.address:
            raise StateError(
                f"{target.name}: the registry has no address for {normal}",
                hint="it gets one when it checks in after installing; see 'kpc nodes show MAC'",
            )
        if not target.host_key:
            try:
                session, status = open_session(target, settings)
            except AccessError as exc:
                raise KpcError(exc.failure.message, exc.failure.hint) from None
            with session:
                record_first_use(store, [(target, session.host_key.line, status)])
            c.err.print(f"recorded the host key of {target.name}: {session.host_key.fingerprint}")
            machine = store.get(normal) or machine
        if not machine.ssh_host_key:
            raise StateError(f"{target.name}: no host key is recorded for {normal}")
        known = write_known_hosts(
            known_hosts_path(config.paths.state_dir), store.machines(), settings.port
        )
        argv = ssh_argv(
            target.address, settings, HostKey.parse(machine.ssh_host_key), known, _words(command)
        )
    exec_program(argv)


def register(app: typer.Typer) -> None:
    """Adds the SSH commands to the ``nodes`` group (``appliance.cli.nodes.group``)."""
    group.command("check")(check)
    group.command("forget-hostkey")(forget_hostkey)
    group.command("exec", context_settings={"allow_interspersed_args": False})(exec_)
    group.command("ssh", context_settings={"allow_interspersed_args": False})(ssh)
