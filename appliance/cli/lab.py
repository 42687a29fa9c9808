"""`kpc lab`: the virtual lab: QEMU servers with simulated BMCs, provisioned by kpc itself.

kpc lab up --nodes 3 --firmware mixed     # namespaces, site router, servers, BMCs
export KPC_CONFIG=/var/lib/kpc/lab/kpc.yaml
kpc up; kpc bmc discover; kpc pxe-all --yes
kpc lab wait                              # every server installed and checked in
kpc lab down                              # everything removed again
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType

import typer
from rich.markup import escape

from appliance.cli.common import Cli, cli, emit_json, new_table, print_table
from appliance.config import Images, load_config
from appliance.errors import KpcError
from appliance.lab.down import lab_down
from appliance.lab.layout import DEFAULT_CACHE, DEFAULT_DIR, LabPaths
from appliance.lab.osbuild import build_lab_os
from appliance.lab.plan import DEFAULT_NAME, FirmwareChoice
from appliance.lab.state import LabState
from appliance.lab.status import (
    OFF_GRACE,
    LabStatus,
    WaitProgress,
    is_problem,
    lab_status,
    require_lab,
    serial_tail,
    wait_for_state,
)
from appliance.lab.supervisor import supervise
from appliance.lab.up import UpRequest, lab_up
from appliance.state.model import Machine, MachineState

group = typer.Typer(
    help="The virtual lab: QEMU servers with simulated BMCs, provisioned by kpc itself.",
    no_args_is_help=True,
)
DEFAULT_FLATCAR_ASSETS = Path("/var/lib/kpc/bootcfg/assets/flatcar")
OS_HELP = (
    "node: the Flatcar-shaped node OS (Debian 13, real Ignition, Docker; 40 GiB disks); "
    "busybox: the small stand-in (no Docker, no Ignition; 2 GiB disks)."
)
DIR_HELP = "The lab's directory (default: $KPC_LAB_DIR, else /var/lib/kpc/lab)."


def _dir(c: Cli, flag: Path | None) -> Path:
    if flag is not None:
        return flag
    return Path(c.environ.get("KPC_LAB_DIR") or DEFAULT_DIR)


def _progress(c: Cli) -> Callable[[str], None]:
    start = time.monotonic()

    def say(message: str) -> None:
        c.err.print(f"[dim]{time.monotonic() - start:6.1f}s[/] {message}")

    return say


def _machines(state: LabState) -> Mapping[str, Machine]:
    """The lab servers' records in kpc's registry (empty before kpc's services ran)."""
    from appliance.state.backend import open_store
    from appliance.state.sqlite import state_db_path

    if state.config is None or not state.config.is_file():
        return {}
    config = load_config(state.config)
    if config.state.backend == "sqlite" and not state_db_path(config).is_file():
        return {}
    store = open_store(config)  # the site's backend: etcd with several deploy hosts
    try:
        return {m.mac: m for m in store.machines()}
    finally:
        store.close()


def _stop_services(environ: Mapping[str, str]) -> Callable[[Path], list[str]]:
    """Removes the containers ``kpc up`` started with the lab's config (its prefix)."""

    def stop(config_file: Path) -> list[str]:
        from appliance.drivers.docker import Docker
        from appliance.services.lifecycle import down, plan_down

        try:
            docker = Docker(environ)
            down(docker, plan_down(load_config(config_file), docker, purge=False))
        except KpcError as exc:
            return [f"service containers: {exc.message}"]
        return []

    return stop


@group.command("up")
def up(
    ctx: typer.Context,
    nodes: int = typer.Option(3, "--nodes", "-n", help="How many servers."),
    firmware: str = typer.Option(
        "mixed", "--firmware", help="bios, uefi, or mixed (odd servers BIOS, even UEFI)."
    ),
    directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP, show_default=False),
    name: str = typer.Option(
        DEFAULT_NAME, "--name", help="Prefix of the lab's namespaces, links and nft table."
    ),
    network: int = typer.Option(
        0,
        "--network",
        help="Which /23 of 198.18.0.0/15 (0-127): site net 198.18.2K.0/24, BMC net the next.",
    ),
    memory: int | None = typer.Option(
        None,
        "--memory",
        help="MiB of RAM per server (default: 3072 for the node OS, 256 for busybox).",
        show_default=False,
    ),
    cpus: int = typer.Option(
        1,
        "--cpus",
        help="vCPUs per server. Under TCG each is a host thread: 2 speed up a Kolla node "
        "on a host with cores to spare.",
    ),
    os_kind: str = typer.Option("busybox", "--os", help=f"What the servers install. {OS_HELP}"),
    bmc: str = typer.Option(
        "ipmi",
        "--bmc",
        help="What the simulated BMCs speak: ipmi, redfish (HTTPS only, IPMI off), or mixed.",
    ),
    cache: Path = typer.Option(DEFAULT_CACHE, "--cache", help="Where the lab OS is built."),
    bootcfg_port: int = typer.Option(
        8080, "--bootcfg-port", help="bootcfg's port in the lab config."
    ),
    registry_port: int = typer.Option(
        5000, "--registry-port", help="The registry's port in the lab config."
    ),
    prefix: str = typer.Option(
        "kpclab", "--services-prefix", help="Container name prefix in the lab config."
    ),
    accel: str = typer.Option(
        "tcg", "--accel", help="tcg, kvm, or auto (KVM only if a test boot under KVM works)."
    ),
    deploy_hosts: int = typer.Option(
        1,
        "--deploy-hosts",
        help="2: a second deploy host in its own namespace (own dnsmasq and bootcfg, "
        "'kpc up' with DIR/kpc-2.yaml) and a 3-member etcd cluster both hosts' configs use "
        "(state.backend: etcd). Needs the base image (kpc images base).",
    ),
    live_host: bool = typer.Option(
        False,
        "--live-host",
        help="Also a live host (liveN): the deploy host to be, booted once from a CD of the "
        "node OS's live image with kpc's rescue profile (needs --os node and --operator-key), "
        "with a 40 GiB disk to install to and a 4 GiB one. It never PXE-boots, so kpc never "
        "installs it: log in and run install-host there (README, On a real rack, step 1).",
    ),
    operator_key: Path | None = typer.Option(
        None,
        "--operator-key",
        help="With --live-host: a public key file (e.g. ~/.ssh/id_ed25519.pub) that core on "
        "the live host accepts (Ignition puts it in core's authorized_keys).",
        show_default=False,
    ),
    flatcar_assets: Path | None = typer.Option(
        None,
        "--flatcar-assets",
        help="A directory of Flatcar versions fetched by 'kpc assets fetch' (its "
        "assets/flatcar): the servers install Flatcar instead of the lab OS. Default: "
        "/var/lib/kpc/bootcfg/assets/flatcar when it holds the configured version.",
        show_default=False,
    ),
) -> None:
    """Make the lab: namespaces and bridges (198.18.0.0/15, never routed out), a site router
    (DHCP + IPv6 RA, no PXE), N powered-off QEMU servers (disk first) and one simulated BMC
    per server; write the lab's site config. Idempotent when the same lab is up; when only
    its supervisor is gone (killed), start it again, keeping every disk, servers off."""
    c = cli(ctx)
    if firmware not in ("bios", "uefi", "mixed"):
        raise typer.BadParameter("must be bios, uefi or mixed", param_hint="--firmware")
    if bmc not in ("ipmi", "redfish", "mixed"):
        raise typer.BadParameter("must be ipmi, redfish or mixed", param_hint="--bmc")
    if accel not in ("tcg", "kvm", "auto"):
        raise typer.BadParameter("must be tcg, kvm or auto", param_hint="--accel")
    if os_kind not in ("node", "busybox"):
        raise typer.BadParameter("must be node or busybox", param_hint="--os")
    choice: FirmwareChoice = (
        "bios" if firmware == "bios" else "uefi" if firmware == "uefi" else "mixed"
    )
    request = UpRequest(
        directory=_dir(c, directory),
        nodes=nodes,
        firmware=choice,
        name=name,
        network=network,
        memory_mib=memory,
        cpus=cpus,
        os="node" if os_kind == "node" else "busybox",
        cache=cache,
        bootcfg_port=bootcfg_port,
        registry_port=registry_port,
        services_prefix=prefix,
        accel=accel,
        flatcar_assets=flatcar_assets or DEFAULT_FLATCAR_ASSETS,
        bmc="redfish" if bmc == "redfish" else "mixed" if bmc == "mixed" else "ipmi",
        deploy_hosts=deploy_hosts,
        live_host=live_host,
        operator_key=operator_key,
    )
    say = _progress(c)

    def tear_down(where: Path) -> None:
        lab_down(where, say, stop_services=None)

    result = lab_up(request, say, tear_down)
    state = result.state
    if result.already_up:
        c.err.print(f"the lab in {state.directory} is already up (nothing changed)")
    table = new_table("SERVER", "FIRMWARE", "MAC", "BMC")
    for server in state.plan.servers:
        role = " (live)" if server.role == "live" else ""
        table.add_row(server.name + role, server.firmware, server.mac, str(server.bmc_address))
    c.err.print(table)
    plan = state.plan
    if result.resumed:
        bmcs = " ".join(str(s.bmc_address) for s in plan.nodes)
        next_steps = (
            f"\nresumed: its supervisor (site router and BMCs) was gone and runs again; every "
            "server's disk is as it was, and every server is powered off. Power them on "
            f"(each boots its disk): kpc bmc power on {bmcs}; then kpc lab wait"
            if plan.nodes
            else "\nresumed: its supervisor (site router and BMCs) was gone and runs again; "
            "every disk is as it was, and every server is powered off"
        )
    else:
        next_steps = (
            "\nNext: kpc up; kpc bmc discover; kpc pxe-all --yes; kpc lab wait"
            if plan.nodes
            else ""
        )
    c.err.print(
        f"lab {plan.name!r} is up in {state.directory}; deploy host {plan.deploy_address} on "
        f"{plan.host_site_link}, BMC network {plan.bmc_net} on {plan.host_bmc_link}." + next_steps
    )
    for live in plan.live_hosts:
        c.err.print(
            f"live host {live.name} is booting the node OS from its CD (a few minutes under "
            f"TCG; 'kpc lab console {live.name}' shows it); then, with the key you gave:\n"
            f"  ssh core@{plan.live_address(live)}\n"
            f"and bring kpc there as on a real rack (README: On a real rack, step 1)."
        )
    if plan.deploy_hosts > 1:
        c.err.print(
            f"deploy host 2: {plan.deploy_host_address(2)} in namespace {plan.host2_ns}; "
            f"its services: KPC_CONFIG={result.config.with_name('kpc-2.yaml')} kpc up"
        )
    typer.echo(f"export KPC_CONFIG={result.config}")


@group.command("status")
def status(
    ctx: typer.Context,
    directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP, show_default=False),
    as_json: bool = typer.Option(False, "--json", help="Everything, as JSON."),
) -> None:
    """Show the lab: its processes, network, and each server's power, registry state and
    last console line."""
    c = cli(ctx)
    state = require_lab(_dir(c, directory))
    try:
        machines, registry = _machines(state), ""
    except KpcError as exc:  # with two deploy hosts: etcd, which the lab's supervisor runs
        machines, registry = {}, exc.message
    st = lab_status(state, machines)
    plan = state.plan
    healthy = state.phase == "up" and bool(st.supervisor) and not st.missing
    if as_json:
        emit_json({**_status_dict(st), "registry_error": registry or None})
        if not healthy:
            raise typer.Exit(1)
        return
    c.out.print(
        f"lab {plan.name!r} in {state.directory}: {state.phase}, {len(plan.servers)} servers "
        f"({state.firmware}); config {state.config}"
    )
    if st.supervisor:
        bmcs = sum(1 for role in st.children if role.startswith("bmc:"))
        others = ", ".join(sorted(role for role in st.children if not role.startswith("bmc:")))
        c.out.print(
            f"supervisor pid {st.supervisor}: {others or 'no router'} and {bmcs} of "
            f"{len(plan.servers)} BMCs running"
        )
    else:
        c.out.print("[bold red]supervisor not running[/]: the site router and BMCs are down")
    for what in st.missing:
        c.out.print(f"[bold red]missing:[/] {what}")
    if registry:
        c.out.print(f"[bold red]registry not readable:[/] {escape(registry)}")
    for role in st.gave_up:
        c.out.print(f"[bold red]gave up restarting[/] {role}")
    rows = [
        (
            s.server.name,
            s.power,
            s.state,
            s.server.mac,
            (s.machine.management_address if s.machine else None)
            or (str(plan.live_address(s.server)) if s.server.role == "live" else "-"),
            str(s.server.bmc_address),
            s.server.firmware,
        )
        for s in st.servers
    ]
    header = ("SERVER", "POWER", "STATE", "MAC", "ADDRESS", "BMC", "FIRMWARE")
    print_table(c, header, rows, drop=("FIRMWARE", "BMC", "ADDRESS"))
    # the console lines under the table, one per server, wrapped rather than cut
    for s in st.servers:
        line = escape(s.serial.removeprefix("kpc-labos: ")) or "-"
        colour = "bold red" if is_problem(s.serial) else "dim"
        c.out.print(f"[{colour}]{s.server.name} console:[/] {line}")
    if not healthy:
        raise typer.Exit(1)


def _status_dict(st: LabStatus) -> dict[str, object]:
    plan = st.state.plan
    return {
        "name": plan.name,
        "directory": str(st.state.directory),
        "phase": st.state.phase,
        "firmware": st.state.firmware,
        "config": str(st.state.config),
        "supervisor": st.supervisor,
        "children": dict(st.children),
        "gave_up": list(st.gave_up),
        "missing": list(st.missing),
        "servers": [
            {
                "name": s.server.name,
                "firmware": s.server.firmware,
                "mac": s.server.mac,
                "bmc": str(s.server.bmc_address),
                "power": s.power,
                "state": s.state,
                "address": s.machine.management_address if s.machine else None,
                "console": s.serial,
                "problem": is_problem(s.serial),
            }
            for s in st.servers
        ],
    }


@group.command("wait")
def wait(
    ctx: typer.Context,
    directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP, show_default=False),
    state_name: str = typer.Option("ready", "--state", help="The registry state to wait for."),
    timeout: float = typer.Option(900.0, "--timeout", help="Seconds before giving up."),
    off_grace: float = typer.Option(
        OFF_GRACE,
        "--off-grace",
        help="Give up early when a server that was on (or has booted) is powered off this "
        "many seconds (its BMC asked every 10s): it never checks in by itself.",
    ),
) -> None:
    """Wait until every lab server has this state in kpc's registry (default: ready). On
    timeout, name each late server with its power (as its BMC says), the end of its serial
    console and of its BMC's and QEMU's logs; give up early on a server powered off for
    good, or when the lab's supervisor (its BMCs and router) is not running."""
    c = cli(ctx)
    try:
        want = MachineState(state_name)
    except ValueError:
        choices = ", ".join(s.value for s in MachineState)
        raise typer.BadParameter(f"must be one of {choices}", param_hint="--state") from None
    state = require_lab(_dir(c, directory))
    say = _progress(c)

    def show(p: WaitProgress) -> None:
        counts: dict[str, int] = {}
        for value in p.states.values():
            counts[value] = counts.get(value, 0) + 1
        line = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        if p.power:
            power: dict[str, list[str]] = {}
            for name, reading in sorted(p.power.items()):
                power.setdefault(reading, []).append(name)
            line += "; not there yet, by their BMCs: " + ", ".join(
                f"{len(names)} {reading} ({' '.join(names)})"
                for reading, names in sorted(power.items())
            )
        say(line)

    took = wait_for_state(
        state,
        lambda: _machines(state),
        want=want,
        timeout=timeout,
        progress=show,
        off_grace=off_grace,
    )
    c.err.print(f"all {len(state.plan.nodes)} lab servers are {want.value} after {took:.0f}s")


@group.command("console")
def console(
    ctx: typer.Context,
    server: str = typer.Argument(..., help="Server name (server1), number or MAC."),
    lines: int = typer.Option(40, "--lines", "-n", help="How many lines."),
    directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP, show_default=False),
) -> None:
    """Print the end of a lab server's serial console."""
    c = cli(ctx)
    state = require_lab(_dir(c, directory))
    found = state.plan.server(server)
    for line in serial_tail(LabPaths(state.directory).server(found).serial_log, lines):
        typer.echo(line)


@group.command("down")
def down(
    ctx: typer.Context,
    directory: Path | None = typer.Option(None, "--dir", help=DIR_HELP, show_default=False),
) -> None:
    """Remove the lab: its service containers, processes, servers, namespaces, links,
    nftables table and files (also after an interrupted 'kpc lab up')."""
    c = cli(ctx)
    where = _dir(c, directory)
    result = lab_down(where, _progress(c), stop_services=_stop_services(c.environ))
    if not result.found:
        c.err.print(f"there is no lab in {where}: nothing to do")
        return
    for problem in result.problems:
        c.err.print(f"[bold yellow]warning:[/] {problem}")
    c.err.print(f"the lab in {where} is gone")


@group.command("build-os")
def build_os(
    ctx: typer.Context,
    cache: Path = typer.Option(DEFAULT_CACHE, "--cache", help="Where the lab OS is built."),
    os_kind: str = typer.Option("node", "--os", help=OS_HELP),
    mirror: str = typer.Option(
        Images().debian_mirror, "--mirror", help="The Debian mirror to use."
    ),
) -> None:
    """Build the lab's node OS into the cache (once per input set), or show the one already
    there. 'kpc lab up' does this itself.

    node: a Flatcar-layout release (PXE kernel and image, signed GPT disk image that
    flatcar-install writes; BIOS and UEFI) built from Debian packages, with Debian's Ignition
    in the initramfs. busybox: Debian's cloud kernel, a busybox initramfs, a small disk image."""
    c = cli(ctx)
    if os_kind not in ("node", "busybox"):
        raise typer.BadParameter("must be node or busybox", param_hint="--os")
    if os_kind == "busybox":
        paths = build_lab_os(cache, _progress(c)).files()
    else:
        from appliance.lab.nodeos import build_node_os

        built = build_node_os(cache, mirror, _progress(c))
        c.err.print(
            f"node OS {built.version} (kernel {built.kernel_release}), signing key "
            f"{built.public_key}"
        )
        paths = built.files()
    for path in paths:
        c.out.print(f"{path}  {path.stat().st_size} bytes")


@group.command("supervise", hidden=True)
def supervise_cmd(
    directory: Path = typer.Option(..., "--dir", help="The lab's directory."),
) -> None:
    """Run the lab's site router and BMCs until SIGTERM (started by 'kpc lab up')."""
    import logging

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    supervise(directory, stop)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="lab")
