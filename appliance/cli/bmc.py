"""`kpc bmc` and `kpc pxe-all`: find BMCs, control power and boot devices over IPMI.

Credentials: the user is ``bmc.user`` (or ``--user``, or a per-host ``bmc.hosts[].user``);
the password comes from ``bmc.password`` (a reference; default: environment variable
KPC_BMC_PASSWORD), a per-host reference, or a hidden prompt on a terminal — never from the
command line, and it is never printed or logged.
"""

from __future__ import annotations

import ipaddress
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from appliance.bmc import arp, discovery, power
from appliance.bmc import protocol as p
from appliance.bmc.targets import Candidate, inventory, select
from appliance.cli.common import Cli, cli, confirm, emit_json
from appliance.config import Bmc as BmcConfig
from appliance.config import SecretRef
from appliance.drivers.ipmi import (
    HINTS,
    Credentials,
    Failure,
    HostOutcome,
    JobFactory,
    RunOptions,
    Target,
)
from appliance.errors import Aborted, BmcError, SecretError, UsageError
from appliance.state.model import Bmc
from appliance.state.sqlite import open_store
from appliance.state.store import MachineStore

PASSWORD_ENV = "KPC_BMC_PASSWORD"

group = typer.Typer(
    help="Find BMCs and control power and boot devices over IPMI.", no_args_is_help=True
)
power_group = typer.Typer(help="Power state: status, on, off, cycle, reset.", no_args_is_help=True)

TARGETS_HELP = (
    "BMCs: addresses (ADDR or ADDR:PORT), networks (10.0.1.0/24) or names/globs from the "
    "inventory. Default: every known BMC (bmc.hosts and discovered ones)."
)


# --- site context ------------------------------------------------------------------------


@dataclass
class _Site:
    """What the BMC commands need from the site: settings and the registry (if any)."""

    settings: BmcConfig
    store: MachineStore | None

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _site(c: Cli) -> _Site:
    """The site config and registry; without a config file, defaults and no registry."""
    if not c.config_path.exists() and c.config_flag is None and "KPC_CONFIG" not in c.environ:
        return _Site(BmcConfig(), None)
    config = c.config()
    return _Site(config.bmc, open_store(config))


def _candidates(site: _Site) -> list[Candidate]:
    discovered = site.store.list_bmcs() if site.store is not None else []
    return inventory(site.settings.hosts, discovered)


def _resolve_password(c: Cli, ref: SecretRef, what: str) -> str:
    try:
        return ref.resolve(c.environ)
    except SecretError as exc:
        fallback = c.environ.get(PASSWORD_ENV)
        if fallback:
            if ref.env != PASSWORD_ENV:
                c.err.print(
                    f"[yellow]warning:[/] bmc.password: {escape(exc.message)}; using {PASSWORD_ENV}"
                )
            return fallback
        if sys.stdin.isatty():
            value = typer.prompt(f"Password for {what}", hide_input=True, err=True)
            if value:
                return str(value)
        raise


def _targets(c: Cli, site: _Site, chosen: Sequence[Candidate], user: str | None) -> list[Target]:
    default_user = user or site.settings.user
    default_password: str | None = None
    out = []
    for candidate in chosen:
        if candidate.password is not None:
            try:
                password = candidate.password.resolve(c.environ)
            except SecretError as exc:
                raise SecretError(f"{candidate.label}: {exc.message}", hint=exc.hint) from None
        else:
            if default_password is None:
                default_password = _resolve_password(
                    c, site.settings.password, f"BMC user {default_user}"
                )
            password = default_password
        out.append(
            Target(
                candidate.address,
                Credentials(candidate.user or default_user, password),
                port=candidate.port,
                name=candidate.name,
            )
        )
    return out


def _choose(
    site: _Site, targets: Sequence[str], only: Sequence[str], exclude: Sequence[str]
) -> list[Candidate]:
    chosen = select(_candidates(site), targets, only=only, exclude=exclude)
    if not chosen:
        raise UsageError(
            "no BMCs to act on",
            hint="list them in bmc.hosts, run 'kpc bmc discover', or give addresses",
        )
    return chosen


# --- running jobs --------------------------------------------------------------------------


def _run(
    c: Cli,
    targets: list[Target],
    factory: JobFactory,
    options: RunOptions,
    what: str,
) -> list[HostOutcome]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=c.err, transient=True) as progress:
        task = progress.add_task(what, total=len(targets), failed=0)
        failed = 0

        def done(outcome: HostOutcome) -> None:
            nonlocal failed
            failed += 0 if outcome.ok else 1
            progress.update(task, advance=1, failed=failed)

        return power.run(targets, factory, options, done)


def _outcome_dict(outcome: HostOutcome) -> dict[str, Any]:
    return {
        "host": outcome.target.address,
        "port": outcome.target.port,
        "name": outcome.target.name,
        "ok": outcome.ok,
        "result": outcome.result or None,
        "failure": outcome.failure.value if outcome.failure else None,
        "error": outcome.error,
        "done": list(outcome.done),
        "attempts": outcome.attempts,
        "seconds": round(outcome.elapsed, 3),
    }


def _report(c: Cli, outcomes: list[HostOutcome], *, as_json: bool, elapsed: float) -> None:
    """The final table (or JSON), hints for each kind of failure, and the exit status."""
    failed = [o for o in outcomes if not o.ok]
    if as_json:
        emit_json([_outcome_dict(o) for o in outcomes])
    else:
        table = Table(box=None, pad_edge=False)
        for column in ("HOST", "RESULT", "ERROR"):
            table.add_column(column)
        for o in outcomes:
            error = f"{o.failure.value}: {o.error}" if o.failure and o.error else o.error
            result = o.result if o.ok else ("partly: " + ", ".join(o.done) if o.done else "failed")
            table.add_row(escape(o.target.label), escape(result), escape(error or ""))
        c.out.print(table)
    c.err.print(f"{len(outcomes) - len(failed)} ok, {len(failed)} failed, in {elapsed:.2f}s")
    if failed:
        kinds = sorted({o.failure for o in failed if o.failure}, key=list(Failure).index)
        raise BmcError(
            f"{len(failed)} of {len(outcomes)} BMCs failed",
            hint="\n      ".join(f"{k.value}: {HINTS[k]}" for k in kinds) or None,
        )


def _plan(c: Cli, chosen: Sequence[Candidate], user: str, action: str, as_json: bool) -> None:
    """--dry-run: who would be asked to do what. Nothing is sent, no password is needed."""
    rows = [
        {"host": cand.label, "user": cand.user or user, "action": power.describe(action)}
        for cand in chosen
    ]
    if as_json:
        emit_json(rows)
        return
    table = Table(box=None, pad_edge=False, title="dry run: nothing is sent", title_justify="left")
    for column in ("HOST", "USER", "WOULD"):
        table.add_column(column)
    for row in rows:
        table.add_row(escape(row["host"]), escape(row["user"]), escape(row["action"]))
    c.out.print(table)


def _act(
    ctx: typer.Context,
    *,
    targets: Sequence[str],
    only: Sequence[str],
    exclude: Sequence[str],
    action: str,
    factory: JobFactory,
    changes: bool,
    yes: bool,
    dry_run: bool,
    as_json: bool,
    user: str | None,
    fanout: int | None,
    timeout: float | None,
    warning: str = "",
) -> None:
    c = cli(ctx)
    if fanout is not None and fanout < 1:
        raise UsageError("--fanout must be at least 1")
    if timeout is not None and timeout <= 0:
        raise UsageError("--timeout must be more than 0 seconds")
    site = _site(c)
    try:
        chosen = _choose(site, targets, only, exclude)
        if dry_run:
            _plan(c, chosen, user or site.settings.user, action, as_json)
            return
        if changes:
            names = ", ".join(cand.label for cand in chosen[:5])
            more = f" and {len(chosen) - 5} more" if len(chosen) > 5 else ""
            question = (
                f"{power.describe(action)} on {len(chosen)} machine(s): {names}{more}."
                f"{warning} Continue?"
            )
            if not confirm(c, question, yes=yes):
                raise Aborted("nothing was sent", hint="pass --yes to confirm")
        resolved = _targets(c, site, chosen, user)
        options = RunOptions(
            fanout=fanout or site.settings.fanout, timeout=timeout or site.settings.timeout
        )
        started = time.monotonic()
        outcomes = _run(c, resolved, factory, options, power.describe(action))
        _report(c, outcomes, as_json=as_json, elapsed=time.monotonic() - started)
    finally:
        site.close()


# --- options shared by the acting commands ----------------------------------------------------

TargetsArg = typer.Argument(None, help=TARGETS_HELP, show_default=False)
OnlyOpt = typer.Option([], "--only", help="Keep only BMCs matching (network or glob).")
ExcludeOpt = typer.Option([], "--exclude", help="Leave out BMCs matching (network or glob).")
YesOpt = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")
DryRunOpt = typer.Option(False, "--dry-run", help="Show what would be done; send nothing.")
JsonOpt = typer.Option(False, "--json", help="Print JSON.")
UserOpt = typer.Option(None, "--user", help="BMC user (default: bmc.user).")
FanoutOpt = typer.Option(None, "--fanout", help="BMCs talked to at once (default: bmc.fanout).")
TimeoutOpt = typer.Option(
    None, "--timeout", help="Seconds per BMC before giving up (default: bmc.timeout)."
)


def _power_command(action: power.PowerAction) -> Callable[..., None]:
    changes = action is not power.PowerAction.STATUS

    def command(
        ctx: typer.Context,
        targets: list[str] | None = TargetsArg,
        only: list[str] = OnlyOpt,
        exclude: list[str] = ExcludeOpt,
        yes: bool = YesOpt,
        dry_run: bool = DryRunOpt,
        as_json: bool = JsonOpt,
        user: str | None = UserOpt,
        fanout: int | None = FanoutOpt,
        timeout: float | None = TimeoutOpt,
    ) -> None:
        _act(
            ctx,
            targets=targets or [],
            only=only,
            exclude=exclude,
            action=action.value,
            factory=power.power_job(action),
            changes=changes,
            yes=yes,
            dry_run=dry_run,
            as_json=as_json,
            user=user,
            fanout=fanout,
            timeout=timeout,
        )

    command.__doc__ = f"{power.describe(action.value).capitalize()}."
    return command


for _action in power.PowerAction:
    power_group.command(_action.value)(_power_command(_action))


@group.command()
def bootdev(
    ctx: typer.Context,
    device: power.BootDevice = typer.Argument(..., help="pxe or disk."),
    targets: list[str] | None = TargetsArg,
    persistent: bool = typer.Option(
        False, "--persistent", help="For every boot from now on, not only the next one."
    ),
    only: list[str] = OnlyOpt,
    exclude: list[str] = ExcludeOpt,
    yes: bool = YesOpt,
    dry_run: bool = DryRunOpt,
    as_json: bool = JsonOpt,
    user: str | None = UserOpt,
    fanout: int | None = FanoutOpt,
    timeout: float | None = TimeoutOpt,
) -> None:
    """Set the boot device for the next boot (or every boot with --persistent)."""
    when = "every boot" if persistent else "the next boot"
    _act(
        ctx,
        targets=targets or [],
        only=only,
        exclude=exclude,
        action=f"set boot device {device.value} for {when}",
        factory=power.bootdev_job(device, persistent=persistent),
        changes=True,
        yes=yes,
        dry_run=dry_run,
        as_json=as_json,
        user=user,
        fanout=fanout,
        timeout=timeout,
        warning=" A machine that PXE boots may be reinstalled (its disk erased)."
        if device is power.BootDevice.PXE
        else "",
    )


def pxe_all(
    ctx: typer.Context,
    targets: list[str] | None = TargetsArg,
    fanout: int | None = typer.Option(
        None, "--fanout", help="BMCs talked to at once (default: bmc.fanout, 50)."
    ),
    only: list[str] = OnlyOpt,
    exclude: list[str] = ExcludeOpt,
    dry_run: bool = DryRunOpt,
    yes: bool = YesOpt,
    as_json: bool = JsonOpt,
    user: str | None = UserOpt,
    timeout: float | None = TimeoutOpt,
) -> None:
    """PXE-boot every machine: one-time PXE boot, then reset (or power on if off).

    Targets: bmc.hosts and the BMCs discovery found, or the ones given.
    """
    _act(
        ctx,
        targets=targets or [],
        only=only,
        exclude=exclude,
        action="pxe",
        factory=power.pxe_job,
        changes=True,
        yes=yes,
        dry_run=dry_run,
        as_json=as_json,
        user=user,
        fanout=fanout,
        timeout=timeout,
        warning=" Machines kpc installs are reinstalled (their install disk erased).",
    )


# --- discovery and inventory -----------------------------------------------------------------


def _found_dict(found: discovery.Found, note: str | None = None) -> dict[str, Any]:
    root = found.redfish
    return {
        "address": found.address,
        "protocols": list(found.protocols),
        "mac": found.mac,
        "ipmi_versions": list(found.ipmi_versions),
        "auth_types": list(found.auth_types),
        "iana": found.iana,
        "vendor": (p.VENDORS.get(found.iana) if found.iana is not None else None)
        or (root.vendor if root else None),
        "answered": [k for k, v in (("ping", found.pong), ("auth-caps", found.auth)) if v]
        + (["redfish"] if root else []),
        "auth_caps_code": found.auth.completion_code if found.auth else None,
        "redfish_version": root.version if root else None,
        "tls_fingerprint": root.fingerprint if root else None,
        "rtt_ms": round(found.rtt * 1000, 2) if found.rtt is not None else None,
        "note": note,
    }


def _record(store: MachineStore, result: discovery.Discovery, now: float) -> dict[str, str]:
    """Record what was found; pin certificates seen for the first time. Notes per host."""
    pinned = {b.address: b.tls_fingerprint for b in store.list_bmcs()}
    notes: dict[str, str] = {}
    for found in result.found:
        store.record_bmc(
            Bmc(
                found.address,
                ipmi_versions=found.ipmi_versions,
                auth_types=found.auth_types,
                iana=found.iana,
                protocols=found.protocols,
            ),
            now,
        )
        seen = found.redfish.fingerprint if found.redfish else None
        if seen is None:
            continue
        known = pinned.get(found.address)
        if known is None:
            store.pin_bmc_cert(found.address, seen)
        elif known != seen:
            notes[found.address] = (
                "TLS certificate CHANGED since it was pinned (kpc will refuse to talk to it; "
                f"if the BMC's certificate was replaced: kpc bmc forget-cert {found.address})"
            )
    return notes


@group.command()
def discover(
    ctx: typer.Context,
    networks: list[str] | None = typer.Argument(
        None, help="Networks to sweep (default: bmc.networks).", show_default=False
    ),
    rate: int | None = typer.Option(
        None, "--rate", help="IPMI packets per second, 0 = unlimited (default: bmc.rate)."
    ),
    timeout: float = typer.Option(1.0, "--timeout", help="Seconds to wait for late answers."),
    retries: int = typer.Option(1, "--retries", help="Second chances for silent addresses."),
    port: int = typer.Option(p.RMCP_PORT, "--port", help="IPMI UDP port."),
    redfish_port: int = typer.Option(443, "--redfish-port", help="Redfish HTTPS port."),
    no_arp: bool = typer.Option(
        False, "--no-arp", help="Probe every address, even on directly attached networks."
    ),
    no_redfish: bool = typer.Option(False, "--no-redfish", help="IPMI only."),
    as_json: bool = JsonOpt,
) -> None:
    """Find BMCs: ARP on attached networks, then IPMI (UDP 623) and Redfish (HTTPS) probes.

    On a network this host is directly attached to, an ARP sweep (raw socket: root) finds
    the live hosts and only those are probed; on routed networks every address is. Each is
    asked for an ASF presence ping + IPMI Get Channel Auth Capabilities, and for its Redfish
    service root (no credentials). Found BMCs are recorded in the machine registry with the
    protocols they speak, and a Redfish certificate seen for the first time is pinned (see
    'kpc bmc list').
    """
    c = cli(ctx)
    if (
        timeout <= 0
        or retries < 0
        or not 0 < port < 65536
        or not 0 < redfish_port < 65536
        or (rate is not None and rate < 0)
    ):
        raise UsageError(
            "--timeout must be > 0, --retries >= 0, --rate >= 0 and the ports 1..65535"
        )
    site = _site(c)
    notes: dict[str, str] = {}
    try:
        nets = _networks(networks or [str(n) for n in site.settings.networks])
        pace = site.settings.rate if rate is None else rate
        budget = discovery.neighbour_budget(nets, discovery.neighbour_table_max())
        if no_arp and budget is not None and (pace == 0 or pace > budget):
            c.err.print(
                f"[yellow]warning:[/] {pace or 'an unlimited rate of'} packets/s can overflow "
                f"this host's neighbour (ARP) table; about {budget}/s is safe here"
            )
        options = discovery.DiscoverOptions(
            udp=discovery.SweepOptions(
                rate=pace,
                timeout=timeout,
                retries=retries,
                retry_after=min(0.5, timeout),
                port=port,
            ),
            arp=None if no_arp else arp.ArpOptions(),
            redfish=not no_redfish,
            redfish_port=redfish_port,
            redfish_timeout=max(timeout, 1.0),
        )
        links = [] if no_arp else discovery.host_links()
        count = len(discovery.expand(nets))
        with c.err.status(f"probing {count} addresses…"):
            result = discovery.run_discover(nets, options, links)
        if site.store is not None:
            notes = _record(site.store, result, time.time())
    finally:
        site.close()
    if as_json:
        emit_json([_found_dict(f, notes.get(f.address)) for f in result.found])
    else:
        table = Table(box=None, pad_edge=False)
        for column in ("ADDRESS", "PROTOCOLS", "IPMI", "VENDOR", "MAC", "RTT"):
            table.add_column(column)
        for f in result.found:
            info = _found_dict(f)
            table.add_row(
                f.address,
                ", ".join(f.protocols),
                ", ".join(f.ipmi_versions) or "-",
                escape(
                    p.vendor_name(f.iana)
                    if f.iana is not None or f.redfish is None
                    else (f.redfish.vendor or "-")
                ),
                f.mac or "-",
                f"{info['rtt_ms']} ms" if info["rtt_ms"] is not None else "-",
            )
        if result.found:
            c.out.print(table)
    arp_note = (
        f"; ARP on {', '.join(result.links)}: {result.arp_alive} of {result.arp_asked} "
        "addresses alive"
        if result.links
        else ""
    )
    c.err.print(
        f"found {len(result.found)} BMC(s) among {result.probed} addresses "
        f"in {result.elapsed:.2f}s ({result.packets} IPMI packets{arp_note})"
        + ("" if site.store is not None else "; not recorded: no site configuration")
    )
    for address, note in notes.items():
        c.err.print(f"[red]warning:[/] {address}: {escape(note)}")
    if result.send_errors:
        summary = ", ".join(f"{k} (x{v})" for k, v in result.send_errors.items())
        c.err.print(f"[yellow]warning:[/] some probes could not be sent: {summary}")


def _networks(texts: Sequence[str]) -> list[ipaddress.IPv4Network]:
    if not texts:
        raise UsageError(
            "no networks to sweep",
            hint="give one (kpc bmc discover 10.0.1.0/24) or set bmc.networks in the config",
        )
    out = []
    for text in texts:
        try:
            out.append(ipaddress.IPv4Network(text, strict=False))
        except ValueError:
            raise UsageError(
                f"not an IPv4 network: {text!r}", hint="write networks as 10.0.1.0/24"
            ) from None
    return out


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _bmc_dict(cand: Candidate, bmc: Bmc | None) -> dict[str, Any]:
    return {
        "address": cand.address,
        "name": cand.name,
        "source": cand.source,
        "user": cand.user,
        "ipmi_versions": list(bmc.ipmi_versions) if bmc else [],
        "auth_types": list(bmc.auth_types) if bmc else [],
        "iana": bmc.iana if bmc else None,
        "last_seen": bmc.last_seen if bmc else None,
        "machine_mac": bmc.machine_mac if bmc else None,
    }


@group.command("list")
def list_(ctx: typer.Context, as_json: bool = JsonOpt) -> None:
    """Known BMCs: bmc.hosts from the config and those discovery recorded."""
    c = cli(ctx)
    site = _site(c)
    try:
        recorded = {b.address: b for b in (site.store.list_bmcs() if site.store else [])}
        candidates = inventory(site.settings.hosts, list(recorded.values()))
    finally:
        site.close()
    rows = [(cand, recorded.get(cand.address)) for cand in candidates]
    if as_json:
        emit_json([_bmc_dict(cand, bmc) for cand, bmc in rows])
        return
    if not rows:
        c.out.print("no BMCs known: run 'kpc bmc discover' or list them in bmc.hosts")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("ADDRESS", "NAME", "SOURCE", "IPMI", "VENDOR (IANA)", "LAST SEEN", "MACHINE"):
        table.add_column(column)
    for cand, bmc in rows:
        table.add_row(
            cand.label if cand.port != p.RMCP_PORT else cand.address,
            escape(cand.name or "-"),
            cand.source,
            ", ".join(bmc.ipmi_versions) if bmc and bmc.ipmi_versions else "-",
            p.vendor_name(bmc.iana if bmc else None),
            _when(bmc.last_seen if bmc else None),
            (bmc.machine_mac if bmc else None) or "-",
        )
    c.out.print(table)


group.add_typer(power_group, name="power")


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="bmc")
    app.command("pxe-all")(pxe_all)
