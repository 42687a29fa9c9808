"""`kpc bmc` and `kpc pxe-all`: find BMCs; power, boot devices, virtual media and inventory
over IPMI or Redfish, per host. Parses, asks and prints; the use cases are in
``appliance.bmc.control`` and ``appliance.bmc.discovery``.

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
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from appliance.bmc import actions, arp, control, discovery
from appliance.bmc import protocol as p
from appliance.bmc.actions import Action, BootDevice, BootMode, Kind, PowerAction
from appliance.bmc.jobs import HINTS, Failure, HostOutcome, Protocol, RunOptions, Target
from appliance.bmc.targets import Candidate
from appliance.cli.common import Cli, cli, confirm, emit_json, new_table, print_table, when
from appliance.config import Bmc as BmcConfig
from appliance.config import SecretRef
from appliance.errors import Aborted, BmcError, SecretError, UsageError
from appliance.state.backend import open_store
from appliance.state.model import Bmc
from appliance.state.store import MachineStore

PASSWORD_ENV = "KPC_BMC_PASSWORD"

group = typer.Typer(
    help="Find BMCs; power, boot devices, virtual media and inventory over IPMI or Redfish.",
    no_args_is_help=True,
)
power_group = typer.Typer(help="Power state: status, on, off, cycle, reset.", no_args_is_help=True)

TARGETS_HELP = (
    "BMCs: addresses (ADDR or ADDR:PORT), networks (10.0.1.0/24), or names, globs or "
    "machine MACs from the inventory. Default: every known BMC (bmc.hosts and discovered)."
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


def _password_source(c: Cli, site: _Site, user: str | None) -> Callable[[Candidate], str]:
    """Per-host references first; the site's password resolved (or asked) once."""
    cache: list[str] = []

    def password_for(candidate: Candidate) -> str:
        if candidate.password is not None:
            try:
                return candidate.password.resolve(c.environ)
            except SecretError as exc:
                raise SecretError(f"{candidate.label}: {exc.message}", hint=exc.hint) from None
        if not cache:
            default_user = user or site.settings.user
            cache.append(_resolve_password(c, site.settings.password, f"BMC user {default_user}"))
        return cache[0]

    return password_for


# --- running jobs --------------------------------------------------------------------------


def _run(c: Cli, targets: list[Target], action: Action, options: RunOptions) -> list[HostOutcome]:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=c.err, transient=True) as progress:
        task = progress.add_task(action.describe(), total=len(targets), failed=0)
        failed = 0

        def done(outcome: HostOutcome) -> None:
            nonlocal failed
            failed += 0 if outcome.ok else 1
            progress.update(task, advance=1, failed=failed)

        return control.run(targets, action, options, done)


def _outcome_dict(outcome: HostOutcome) -> dict[str, Any]:
    found = outcome.inventory
    return {
        "host": outcome.target.address,
        "port": outcome.target.effective_port,
        "name": outcome.target.name,
        "protocol": outcome.target.protocol.value,
        "ok": outcome.ok,
        "result": outcome.result or None,
        "failure": outcome.failure.value if outcome.failure else None,
        "error": outcome.error,
        "done": list(outcome.done),
        "attempts": outcome.attempts,
        "seconds": round(outcome.elapsed, 3),
        **(
            {
                "inventory": {
                    "manufacturer": found.manufacturer,
                    "model": found.model,
                    "serial": found.serial,
                    "uuid": found.uuid,
                    "macs": list(found.macs),
                    "power": found.power,
                }
            }
            if found is not None
            else {}
        ),
    }


def _report(c: Cli, outcomes: list[HostOutcome], *, as_json: bool, elapsed: float) -> None:
    """The final table (or JSON), hints for each kind of failure, and the exit status."""
    failed = [o for o in outcomes if not o.ok]
    if as_json:
        emit_json([_outcome_dict(o) for o in outcomes])
    else:
        table = new_table("HOST", "VIA", "RESULT", "ERROR")
        for o in outcomes:
            error = f"{o.failure.value}: {o.error}" if o.failure and o.error else o.error
            result = o.result if o.ok else ("partly: " + ", ".join(o.done) if o.done else "failed")
            table.add_row(
                escape(o.target.label),
                o.target.protocol.value,
                escape(result),
                escape(error or ""),
            )
        c.out.print(table)
    c.err.print(f"{len(outcomes) - len(failed)} ok, {len(failed)} failed, in {elapsed:.2f}s")
    if failed:
        kinds = sorted({o.failure for o in failed if o.failure}, key=list(Failure).index)
        raise BmcError(
            f"{len(failed)} of {len(outcomes)} BMCs failed",
            hint="\n      ".join(f"{k.value}: {HINTS[k]}" for k in kinds) or None,
        )


def _plan(
    c: Cli,
    chosen: Sequence[Candidate],
    site: _Site,
    user: str | None,
    action: Action,
    protocol: Protocol | None,
    as_json: bool,
) -> None:
    """--dry-run: who would be asked to do what, over which protocol. Nothing is sent, no
    password is needed."""
    rows = [
        {
            "host": cand.label,
            "protocol": control.protocol_of(cand, protocol, site.settings.protocol).value,
            "user": cand.user or user or site.settings.user,
            "action": action.describe(),
        }
        for cand in chosen
    ]
    if as_json:
        emit_json(rows)
        return
    table = new_table("HOST", "VIA", "USER", "WOULD", title="dry run: nothing is sent")
    for row in rows:
        table.add_row(
            escape(row["host"]), row["protocol"], escape(row["user"]), escape(row["action"])
        )
    c.out.print(table)


@dataclass(frozen=True)
class _Common:
    """The options every acting command takes."""

    targets: Sequence[str]
    only: Sequence[str]
    exclude: Sequence[str]
    yes: bool
    dry_run: bool
    as_json: bool
    user: str | None
    fanout: int | None
    timeout: float | None
    protocol: Protocol | None
    insecure: bool
    ca_bundle: Path | None


def _act(ctx: typer.Context, o: _Common, action: Action, warning: str = "") -> None:
    c = cli(ctx)
    if o.fanout is not None and o.fanout < 1:
        raise UsageError("--fanout must be at least 1")
    if o.timeout is not None and o.timeout <= 0:
        raise UsageError("--timeout must be more than 0 seconds")
    if o.insecure and o.ca_bundle is not None:
        raise UsageError("--insecure and --ca-bundle contradict each other: give one")
    if o.ca_bundle is not None and not o.ca_bundle.is_file():
        raise UsageError(f"--ca-bundle {o.ca_bundle}: no such file")
    site = _site(c)
    try:
        recorded = site.store.list_bmcs() if site.store is not None else []
        chosen = control.choose(
            control.candidates(site.settings, None, recorded), o.targets, o.only, o.exclude,
            recorded,
        )  # fmt: skip
        if o.dry_run:
            _plan(c, chosen, site, o.user, action, o.protocol, o.as_json)
            return
        if action.changes_state:
            names = ", ".join(cand.label for cand in chosen[:5])
            more = f" and {len(chosen) - 5} more" if len(chosen) > 5 else ""
            question = (
                f"{action.describe()} on {len(chosen)} machine(s): {names}{more}."
                f"{warning} Continue?"
            )
            if not confirm(c, question, yes=o.yes):
                raise Aborted("nothing was sent", hint="pass --yes to confirm")
        if o.insecure:
            c.err.print(
                "[yellow]warning:[/] --insecure: Redfish certificates are not checked; "
                "anyone on the path could read the BMC password"
            )
        resolved = control.resolve(
            chosen,
            site.settings,
            user=o.user,
            password_for=_password_source(c, site, o.user),
            protocol=o.protocol,
            tls=control.TlsChoice(
                ca_bundle=str(o.ca_bundle) if o.ca_bundle else None, insecure=o.insecure
            ),
        )
        options = RunOptions(
            fanout=o.fanout or site.settings.fanout, timeout=o.timeout or site.settings.timeout
        )
        started = time.monotonic()
        with control.serialised(site.store, resolved, action):
            outcomes = _run(c, resolved, action, options)
        elapsed = time.monotonic() - started
        if site.store is not None:
            for note in control.record(site.store, outcomes, time.time()):
                c.err.print(escape(note))
        _report(c, outcomes, as_json=o.as_json, elapsed=elapsed)
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
ProtocolOpt = typer.Option(
    None,
    "--protocol",
    help="Speak this protocol to every BMC (default: per host; bmc.protocol).",
)
InsecureOpt = typer.Option(
    False, "--insecure", help="Redfish: do not check TLS certificates at all (not recommended)."
)
CaBundleOpt = typer.Option(
    None, "--ca-bundle", help="Redfish: verify certificates with this PEM CA bundle."
)
ModeOpt = typer.Option(
    None, "--mode", help="Firmware boot mode for the override (IPMI: the EFI boot flag)."
)


def _common(
    targets: list[str] | None,
    only: list[str],
    exclude: list[str],
    yes: bool,
    dry_run: bool,
    as_json: bool,
    user: str | None,
    fanout: int | None,
    timeout: float | None,
    protocol: Protocol | None,
    insecure: bool,
    ca_bundle: Path | None,
) -> _Common:
    return _Common(targets or [], only, exclude, yes, dry_run, as_json, user, fanout, timeout,
                   protocol, insecure, ca_bundle)  # fmt: skip


def _power_command(which: PowerAction) -> Callable[..., None]:
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
        protocol: Protocol | None = ProtocolOpt,
        insecure: bool = InsecureOpt,
        ca_bundle: Path | None = CaBundleOpt,
    ) -> None:
        common = _common(targets, only, exclude, yes, dry_run, as_json, user, fanout, timeout,
                         protocol, insecure, ca_bundle)  # fmt: skip
        _act(ctx, common, actions.power(which))

    command.__doc__ = f"{actions.power(which).describe().capitalize()}."
    return command


for _action in PowerAction:
    power_group.command(_action.value)(_power_command(_action))


@group.command()
def bootdev(
    ctx: typer.Context,
    device: BootDevice = typer.Argument(..., help="pxe, disk, http (UEFI HTTP) or cd."),
    targets: list[str] | None = TargetsArg,
    persistent: bool = typer.Option(
        False, "--persistent", help="For every boot from now on, not only the next one."
    ),
    mode: BootMode | None = ModeOpt,
    only: list[str] = OnlyOpt,
    exclude: list[str] = ExcludeOpt,
    yes: bool = YesOpt,
    dry_run: bool = DryRunOpt,
    as_json: bool = JsonOpt,
    user: str | None = UserOpt,
    fanout: int | None = FanoutOpt,
    timeout: float | None = TimeoutOpt,
    protocol: Protocol | None = ProtocolOpt,
    insecure: bool = InsecureOpt,
    ca_bundle: Path | None = CaBundleOpt,
) -> None:
    """Set the boot device for the next boot (or every boot with --persistent)."""
    common = _common(targets, only, exclude, yes, dry_run, as_json, user, fanout, timeout,
                     protocol, insecure, ca_bundle)  # fmt: skip
    action = Action(Kind.BOOTDEV, device=device, persistent=persistent, mode=mode)
    warning = (
        " A machine that PXE boots may be reinstalled (its disk erased)."
        if device in (BootDevice.PXE, BootDevice.HTTP)
        else ""
    )
    _act(ctx, common, action, warning)


def pxe_all(
    ctx: typer.Context,
    targets: list[str] | None = TargetsArg,
    fanout: int | None = typer.Option(
        None, "--fanout", help="BMCs talked to at once (default: bmc.fanout, 50)."
    ),
    mode: BootMode | None = ModeOpt,
    only: list[str] = OnlyOpt,
    exclude: list[str] = ExcludeOpt,
    dry_run: bool = DryRunOpt,
    yes: bool = YesOpt,
    as_json: bool = JsonOpt,
    user: str | None = UserOpt,
    timeout: float | None = TimeoutOpt,
    protocol: Protocol | None = ProtocolOpt,
    insecure: bool = InsecureOpt,
    ca_bundle: Path | None = CaBundleOpt,
) -> None:
    """PXE-boot every machine: one-time PXE boot, then reset (or power on if off).

    Targets: bmc.hosts and the BMCs discovery found, or the ones given. Each BMC is driven
    over its own protocol (Redfish where discovery found it, else IPMI; --protocol forces).
    """
    common = _common(targets, only, exclude, yes, dry_run, as_json, user, fanout, timeout,
                     protocol, insecure, ca_bundle)  # fmt: skip
    action = Action(Kind.PXE, mode=mode)
    _act(ctx, common, action, " Machines kpc installs are reinstalled (their install disk erased).")


@group.command("inventory")
def inventory_(
    ctx: typer.Context,
    targets: list[str] | None = TargetsArg,
    only: list[str] = OnlyOpt,
    exclude: list[str] = ExcludeOpt,
    as_json: bool = JsonOpt,
    user: str | None = UserOpt,
    fanout: int | None = FanoutOpt,
    timeout: float | None = TimeoutOpt,
    protocol: Protocol | None = ProtocolOpt,
    insecure: bool = InsecureOpt,
    ca_bundle: Path | None = CaBundleOpt,
) -> None:
    """Read each machine's model, serial, UUID and MACs (Redfish) and record them.

    Recorded MACs make a machine known, with its BMC, before it ever PXE-boots: a machine
    that boots with one of them is linked to this BMC, and the MAC works as a target.
    """
    common = _common(targets, only, exclude, True, False, as_json, user, fanout, timeout,
                     protocol, insecure, ca_bundle)  # fmt: skip
    _act(ctx, common, actions.INVENTORY)


media_group = typer.Typer(help="Virtual media (Redfish): insert or eject an ISO by URL.",
                          no_args_is_help=True)  # fmt: skip


@media_group.command("insert")
def media_insert(
    ctx: typer.Context,
    image: str = typer.Argument(..., help="ISO URL the BMC fetches (e.g. served by bootcfg)."),
    targets: list[str] | None = TargetsArg,
    boot: bool = typer.Option(
        False, "--boot", help="Then boot from it once: reset (or power on if off)."
    ),
    only: list[str] = OnlyOpt,
    exclude: list[str] = ExcludeOpt,
    yes: bool = YesOpt,
    dry_run: bool = DryRunOpt,
    as_json: bool = JsonOpt,
    user: str | None = UserOpt,
    fanout: int | None = FanoutOpt,
    timeout: float | None = TimeoutOpt,
    insecure: bool = InsecureOpt,
    ca_bundle: Path | None = CaBundleOpt,
) -> None:
    """Insert an ISO (by URL) into each BMC's virtual CD/DVD drive."""
    if not image.startswith(("http://", "https://")):
        raise UsageError(f"not an http(s) URL: {image!r}", hint="give the URL the BMC fetches")
    common = _common(targets, only, exclude, yes, dry_run, as_json, user, fanout, timeout,
                     Protocol.REDFISH, insecure, ca_bundle)  # fmt: skip
    _act(ctx, common, Action(Kind.MEDIA_INSERT, image=image, boot=boot))


@media_group.command("eject")
def media_eject(
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
    insecure: bool = InsecureOpt,
    ca_bundle: Path | None = CaBundleOpt,
) -> None:
    """Eject whatever each BMC's virtual CD/DVD drive holds."""
    common = _common(targets, only, exclude, yes, dry_run, as_json, user, fanout, timeout,
                     Protocol.REDFISH, insecure, ca_bundle)  # fmt: skip
    _act(ctx, common, Action(Kind.MEDIA_EJECT))


@group.command("forget-cert")
def forget_cert(
    ctx: typer.Context, address: str = typer.Argument(..., help="The BMC's address.")
) -> None:
    """Forget a BMC's pinned TLS certificate: the next contact pins the one it presents.

    Only for a certificate you know was replaced (a new BMC firmware, a replaced board);
    otherwise a changed certificate means someone else may be answering.
    """
    c = cli(ctx)
    site = _site(c)
    try:
        if site.store is None:
            raise UsageError("no site configuration, so no registry of pinned certificates")
        if not control.forget_cert(site.store, address):
            raise UsageError(
                f"no pinned certificate for {address}",
                hint="'kpc bmc list' shows the BMCs and whether a certificate is pinned",
            )
    finally:
        site.close()
    c.err.print(f"{address}: pinned certificate forgotten; the next contact pins the new one")


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
            notes = discovery.record(site.store, result, time.time())
    finally:
        site.close()
    if as_json:
        emit_json([_found_dict(f, notes.get(f.address)) for f in result.found])
    else:
        table = new_table("ADDRESS", "PROTOCOLS", "IPMI", "VENDOR", "MAC", "RTT")
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


def _bmc_dict(cand: Candidate, bmc: Bmc | None) -> dict[str, Any]:
    return {
        "address": cand.address,
        "name": cand.name,
        "source": cand.source,
        "user": cand.user,
        "protocols": list(bmc.protocols) if bmc else [],
        "ipmi_versions": list(bmc.ipmi_versions) if bmc else [],
        "auth_types": list(bmc.auth_types) if bmc else [],
        "iana": bmc.iana if bmc else None,
        "tls_fingerprint": bmc.tls_fingerprint if bmc else None,
        "model": bmc.model if bmc else None,
        "serial": bmc.serial if bmc else None,
        "uuid": bmc.uuid if bmc else None,
        "macs": list(bmc.macs) if bmc else [],
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
        candidates = control.candidates(site.settings, None, list(recorded.values()))
    finally:
        site.close()
    rows = [(cand, recorded.get(cand.address)) for cand in candidates]
    if as_json:
        emit_json([_bmc_dict(cand, bmc) for cand, bmc in rows])
        return
    if not rows:
        c.out.print("no BMCs known: run 'kpc bmc discover' or list them in bmc.hosts")
        return
    header = ["ADDRESS", "NAME", "SOURCE", "PROTOCOLS", "VENDOR", "CERT", "MACS", "LAST SEEN"]
    table = [
        [
            cand.label,
            cand.name or "-",
            cand.source,
            ", ".join(bmc.protocols) if bmc and bmc.protocols else "-",
            p.vendor_name(bmc.iana if bmc else None)
            if bmc is None or bmc.iana is not None or not bmc.model
            else bmc.model,
            f"{bmc.tls_fingerprint[:12]}…" if bmc and bmc.tls_fingerprint else "-",
            ", ".join(bmc.macs) if bmc and bmc.macs else "-",
            when(bmc.last_seen if bmc else None),
        ]
        for cand, bmc in rows
    ]
    print_table(
        c, header, table, drop=("CERT", "LAST SEEN", "SOURCE", "MACS", "VENDOR", "PROTOCOLS")
    )


group.add_typer(power_group, name="power")
group.add_typer(media_group, name="media")


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="bmc")
    app.command("pxe-all")(pxe_all)
