"""`kpc up|down|status|logs`: run kpc's service containers."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import typer
from rich.markup import escape

from appliance.cli.common import Cli, cli, confirm, emit_json, print_table
from appliance.drivers.docker import ContainerSpec, Docker
from appliance.errors import Aborted, KpcError
from appliance.services import lifecycle
from appliance.services.spec import SERVICES, env_secrets_needed, service_specs

SERVICES_HELP = f"Services ({', '.join(SERVICES)}; default: all)."


def _specs(c: Cli) -> dict[str, ContainerSpec]:
    config = c.config()
    return service_specs(
        config, c.config_path.absolute(), os_version=lifecycle.bootcfg_os_version(config)
    )


def _secrets(c: Cli, specs: dict[str, ContainerSpec]) -> dict[str, str]:
    """Values of the environment secrets the containers need (resolved here, passed down)."""
    token = c.config().bootcfg.token
    values = {}
    for name in env_secrets_needed(specs):
        if token is not None and token.env == name:
            values[name] = token.resolve(c.environ)
    return values


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def up(
    ctx: typer.Context,
    services: list[str] = typer.Argument(None, help=SERVICES_HELP, metavar="[SERVICE]..."),
) -> None:
    """Start kpc's services (or make them match the site config) and wait until healthy.

    Steps: check every image is built; per service, keep a running container whose
    configuration and image are unchanged, start a stopped one, recreate a changed one;
    then wait (services.health_timeout) until each passes its health check. A service that
    fails is named, with its last log lines.
    """
    c = cli(ctx)
    config = c.config()
    specs = _specs(c)
    docker = Docker(c.environ)
    actions = lifecycle.up(
        config,
        docker,
        specs,
        services or [],
        secrets=_secrets(c, specs),
        on_action=lambda a: c.out.print(f"{a.service}: {a.verb} ({escape(a.reason)})"),
        on_ready=lambda s, t: c.out.print(f"{s}: healthy ({t:.1f} s)"),
    )
    c.out.print(f"{len(actions)} service(s) up and healthy")


def down(
    ctx: typer.Context,
    purge: bool = typer.Option(
        False, "--purge", help="Also delete the data: bootcfg.data_dir, registry.storage."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before --purge deletes."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what would happen; change nothing."
    ),
) -> None:
    """Stop and remove kpc's service containers; data directories are kept.

    Steps: remove every container labelled with services.prefix (dnsmasq first); with
    --purge, after a confirmation (or --yes), delete bootcfg.data_dir (machine registry,
    groups, profiles, assets) and registry.storage (pushed images).
    """
    c = cli(ctx)
    config = c.config()
    docker = Docker(c.environ)
    plan = lifecycle.plan_down(config, docker, purge=purge)
    if not plan.containers and not plan.data_dirs:
        c.out.print("nothing to remove")
        return
    if dry_run:
        for name in plan.containers:
            c.out.print(f"would remove container {name}")
        for path in plan.data_dirs:
            c.out.print(f"would delete {path}")
        return
    if plan.data_dirs:
        listed = ", ".join(str(p) for p in plan.data_dirs)
        try:
            agreed = confirm(c, f"Delete {listed} for good?", yes=yes)
        except typer.Abort:
            agreed = False
        if not agreed:
            raise Aborted("nothing was removed", hint="pass --yes to purge without asking")
    lifecycle.down(docker, plan, on_step=lambda step: c.out.print(escape(step)))
    kept = "" if purge else " (data kept; --purge deletes it)"
    c.out.print(f"down{kept}")


def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show each service: state, health, image, ports, uptime, restarts, and any problem.

    A service with a problem (missing, exited, crash-looping, unhealthy) is listed with its
    last log lines.
    """
    c = cli(ctx)
    statuses = lifecycle.status(Docker(c.environ), _specs(c))
    if as_json:
        data: list[dict[str, Any]] = []
        for s in statuses:
            item = asdict(s)
            item["started_at"] = s.started_at.isoformat() if s.started_at else None
            data.append(item)
        emit_json(data)
        return
    header = ["SERVICE", "STATE", "HEALTH", "IMAGE", "PORTS", "UPTIME", "RESTARTS"]
    rows = []
    for s in statuses:
        state = s.state + (",outdated" if s.outdated and s.state != "missing" else "")
        rows.append(
            [
                s.service,
                state,
                s.health or "-",
                s.image,
                ",".join(s.ports) or "-",
                _duration(s.uptime_seconds),
                str(s.restarts),
            ]
        )
    print_table(c, header, rows, drop=("RESTARTS", "IMAGE", "UPTIME"))
    for s in statuses:
        if s.problem:
            c.out.print(f"\n[bold]{s.service}[/]: {escape(s.problem)}")
            for line in s.log_tail:
                c.out.print(f"  | {escape(line)}")
    _registry_status(c)


def _registry_status(c: Cli) -> None:
    """The machine registry's line(s): writable, or why not (etcd: quorum, each member)."""
    from appliance.state.backend import open_store
    from appliance.state.sqlite import state_db_path

    config = c.config()
    if config.state.backend == "sqlite" and not state_db_path(config).exists():
        c.out.print(f"\n[bold]registry[/]: SQLite {state_db_path(config)}: not made yet")
        return
    try:
        store = open_store(config, c.environ)
    except KpcError as exc:
        c.out.print(f"\n[bold]registry[/]: [red]cannot open[/]: {escape(exc.message)}")
        return
    try:
        writable, lines = store.health()
    finally:
        store.close()
    mark = "" if writable else "[red]"
    c.out.print(f"\n[bold]registry[/]: {mark}{escape(lines[0])}" + ("[/]" if mark else ""))
    for line in lines[1:]:
        c.out.print(escape(line))


def logs(
    ctx: typer.Context,
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines."),
    tail: int = typer.Option(100, "--tail", "-n", help="Lines of history to show."),
) -> None:
    """Show a service's log (its container's output)."""
    c = cli(ctx)
    lifecycle.logs(
        Docker(c.environ),
        _specs(c),
        service,
        follow=follow,
        tail=tail,
        on_line=lambda line: c.out.print(escape(line)),
    )


def register(app: typer.Typer) -> None:
    """Top-level commands: kpc up, down, status, logs."""
    app.command()(up)
    app.command()(down)
    app.command()(status)
    app.command()(logs)
