"""`kpc bootcfg`: The provisioning HTTP service (matchbox-compatible)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from appliance.bootcfg.app import run
from appliance.bootcfg.catalog import load_catalog
from appliance.bootcfg.migrate import apply_import, plan_import
from appliance.bootcfg.setup import (
    build_service,
    read_data_dir_keys,
    resolve_os_version,
    seed_data_dir,
)
from appliance.cli.common import cli, listen_option, port_option, serve_until_stopped
from appliance.config import security_warnings
from appliance.keys import authorized_keys_path, collect_keys
from appliance.resources import resource_dir
from appliance.state.backend import open_store
from appliance.state.sqlite import SERVICE_BUSY_TIMEOUT_MS

group = typer.Typer(
    help="The provisioning HTTP service (matchbox-compatible).", no_args_is_help=True
)

SSH_KEY_HELP = "An SSH public key file for the nodes' core user (repeatable)."


@group.command()
def serve(
    ctx: typer.Context,
    listen: str | None = listen_option("Address to bind (default: bootcfg.listen)."),
    port: int | None = port_option("Port (default: bootcfg.port)."),
    data_dir: Path | None = typer.Option(
        None,
        help="Groups, profiles, templates, assets (default: bootcfg.data_dir). The machine "
        "registry stays where 'kpc nodes' finds it: bootcfg.state_db, else "
        "bootcfg.data_dir/machines.db.",
    ),
    ssh_key: list[Path] = typer.Option([], "--ssh-key", help=SSH_KEY_HELP),
    os_version: str | None = typer.Option(
        None, help="Flatcar version templates see (default: os.version; for 'host' detected)."
    ),
    access_log: bool = typer.Option(True, help="Log every request."),
) -> None:
    """Serve iPXE scripts, Ignition configs and assets to booting machines.

    Steps: load the site config; load the data dir (each broken file logged and left out
    of service, the rest served; 'kpc bootcfg check' lists them); open the machine
    registry; serve until interrupted. Edits to the data dir are picked up within a second.
    """
    c = cli(ctx)
    config = c.config()
    directory = data_dir or config.bootcfg.data_dir
    token = config.bootcfg.token.resolve(c.environ) if config.bootcfg.token else None
    found = read_data_dir_keys(directory) + collect_keys(None, ssh_key).keys
    keys = list({key.line: key for key in found}.values())
    version = resolve_os_version(config, os_version, directory)
    logging.getLogger("kpc.bootcfg").setLevel(logging.INFO)
    log = logging.getLogger("kpc.bootcfg")
    if not keys:
        log.warning("no SSH keys (run 'kpc bootcfg init' or pass --ssh-key): nodes get no login")
    store = open_store(config, busy_timeout_ms=SERVICE_BUSY_TIMEOUT_MS)
    try:
        service = build_service(
            config, store, data_dir=directory, keys=keys, os_version=version, token=token
        )
        host = listen or str(config.bootcfg.listen)
        bind_port = port or config.bootcfg.port
        catalog = service.catalog
        log.info(
            "serving %s on http://%s:%d (%d groups, %d profiles; Flatcar %s; node writes: %s)",
            directory,
            host,
            bind_port,
            len(catalog.groups),
            len(catalog.profiles),
            version,
            (
                "per-machine credentials"
                if service.node_auth != "open"
                else ("a shared token" if token else "OPEN to anyone on the network")
            ),
        )
        for warning in security_warnings(config):
            log.warning("%s", warning)
        serve_until_stopped(
            "bootcfg",
            host,
            bind_port,
            lambda: run(service, host, bind_port, access_log=access_log),
        )
    finally:
        store.close()


@group.command()
def init(
    ctx: typer.Context,
    data_dir: Path | None = typer.Option(None, help="Default: bootcfg.data_dir."),
    ssh_key: list[Path] = typer.Option([], "--ssh-key", help=SSH_KEY_HELP),
    os_version: str | None = typer.Option(None, help="Flatcar version (default: os.version)."),
    force: bool = typer.Option(False, "--force", help="Overwrite kpc's files if they exist."),
) -> None:
    """Write kpc's groups, profiles and templates into the data dir.

    A default group installs Flatcar on every machine not yet installed; a group with
    selector os=installed serves installed nodes their config; a rescue profile boots Flatcar
    live with console autologin. Existing files are kept unless --force.
    """
    c = cli(ctx)
    config = c.config()
    directory = data_dir or config.bootcfg.data_dir
    collection = collect_keys(authorized_keys_path(c.environ, os.geteuid()), ssh_key)
    version = resolve_os_version(config, os_version, directory)
    report = seed_data_dir(
        config,
        directory,
        version=version,
        keys=collection.keys,
        ignition_dir=resource_dir("ignition", config.paths.source_dir),
        force=force,
    )
    for path in report.written:
        c.out.print(f"wrote {path}")
    for path in report.kept:
        c.out.print(f"kept  {path} (exists; --force to overwrite)")
    c.out.print(f"{len(collection.keys)} SSH key(s); Flatcar {version}; data dir {directory}")
    if not collection.keys:
        c.err.print("warning: no SSH keys found: installed nodes will have no login (--ssh-key)")


@group.command()
def check(
    ctx: typer.Context,
    data_dir: Path | None = typer.Option(
        None, help="The data dir to check (default: bootcfg.data_dir; no site config needed)."
    ),
) -> None:
    """Check a data dir (kpc's or an existing matchbox one) the way 'serve' loads it.

    Steps: read every group, profile, Ignition and generic file; print each broken file
    and what is wrong with it (the service leaves exactly those out of service and serves
    the rest), then warnings (served, but worth knowing). Exits 1 when any file is broken.
    """
    c = cli(ctx)
    directory = data_dir or c.config().bootcfg.data_dir
    catalog = load_catalog(directory)
    c.out.print(
        f"{directory}: {len(catalog.groups)} groups, {len(catalog.profiles)} profiles, "
        f"{len(catalog.ignition)} Ignition files, {len(catalog.generic)} generic files",
        markup=False,
    )
    for problem in catalog.problems:
        c.err.print(f"broken: {problem}", markup=False)
    for warning in catalog.warnings:
        c.err.print(f"warning: {warning}", markup=False)
    if catalog.problems:
        count = len(catalog.problems)
        c.err.print(
            f"{count} broken file{'s' if count != 1 else ''}: each is out of service until "
            "fixed; the rest serves",
            markup=False,
        )
        raise typer.Exit(1)
    c.out.print("ok: every file loads", markup=False)


@group.command("import-matchbox")
def import_matchbox(
    ctx: typer.Context,
    source: Path = typer.Argument(..., help="The matchbox data dir (e.g. /var/lib/matchbox)."),
    data_dir: Path | None = typer.Option(None, help="Into this dir (default: bootcfg.data_dir)."),
    force: bool = typer.Option(False, "--force", help="Replace files that differ."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what would be copied; copy nothing."
    ),
) -> None:
    """Copy a matchbox data dir's groups, profiles, Ignition and generic files into kpc's.

    Steps: check the source as 'kpc bootcfg check' does (any broken file: nothing is
    copied); plan the copy (a file kpc already has with other content is a conflict: nothing
    is copied unless --force); copy; check the result. Templates are copied as they are:
    bootcfg renders matchbox's Go templates itself. Assets are not copied (move or link
    SOURCE/assets yourself: they can be large).
    """
    c = cli(ctx)
    dest = data_dir or c.config().bootcfg.data_dir
    catalog = load_catalog(source)
    for problem in catalog.problems:
        c.err.print(f"broken: {problem}", markup=False)
    if catalog.problems:
        c.err.print("nothing copied: fix the files above first", markup=False)
        raise typer.Exit(1)
    plan = plan_import(catalog, dest, force=force)
    for path in plan.conflicts:
        c.err.print(f"{'replace' if force else 'conflict'}: {path} differs", markup=False)
    if plan.conflicts and not force:
        c.err.print("nothing copied: --force replaces the files that differ", markup=False)
        raise typer.Exit(1)
    for path, target in plan.copies:
        c.out.print(f"{'would copy' if dry_run else 'copy'} {path} -> {target}", markup=False)
    c.out.print(f"{len(plan.copies)} to copy, {len(plan.same)} already there", markup=False)
    if dry_run:
        return
    dest.mkdir(parents=True, exist_ok=True)
    apply_import(plan)
    result = load_catalog(dest)
    for warning in result.warnings:
        c.err.print(f"warning: {warning}", markup=False)
    for problem in result.problems:
        c.err.print(f"broken: {problem}", markup=False)
    if result.problems:
        raise typer.Exit(1)
    c.out.print(f"{dest}: every file loads", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="bootcfg")
