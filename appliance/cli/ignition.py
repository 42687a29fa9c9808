"""`kpc ignition`: Render Ignition configs (deployhost, install, targetnode)."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path

import typer

from appliance.cli.common import Cli, cli
from appliance.config import SiteConfig
from appliance.errors import ConfigError, UsageError
from appliance.inputfile import MAX_TEMPLATE_BYTES, read_text
from appliance.install.osrelease import detect_os
from appliance.keys import KeyCollection, authorized_keys_path, collect_keys
from appliance.mac import normalize_mac
from appliance.outputfile import write_atomic
from appliance.render.ignition import dumps, render_ignition, request_context, site_context
from appliance.resources import resource_dir
from appliance.services.units import systemd_services

group = typer.Typer(
    help="Render Ignition configs (deployhost, install, targetnode).", no_args_is_help=True
)


class Role(StrEnum):
    deployhost = "deployhost"
    install = "install"
    targetnode = "targetnode"


def show_keys(c: Cli, found: KeyCollection) -> None:
    """Say, before using them, which keys go in and what was skipped (on stderr)."""
    for path in found.missing:
        c.err.print(f"note: no {path}; no keys from there", markup=False)
    for problem in found.problems:
        c.err.print(f"warning: skipped {problem}", style="yellow", markup=False)
    for dup in found.duplicates:
        c.err.print(
            f"note: {dup.source}:{dup.lineno}: {dup.fingerprint} is already included",
            markup=False,
        )
    for key in found.keys:
        c.err.print(
            f"ssh key: {key.label} {key.fingerprint} {key.comment or '(no comment)'}  "
            f"[{key.source}:{key.lineno}]",
            markup=False,
        )
        if key.options:
            c.err.print(
                f"  note: its options ({key.options}) are not carried over; the nodes get "
                "the bare key",
                markup=False,
            )


def host_flatcar_version(config: SiteConfig) -> str | None:
    """This host's Flatcar version when the config says ``os.version: host``."""
    if config.os.version != "host":
        return None
    host = detect_os(Path("/"))
    if host.flavor is None or host.flavor.value != "flatcar" or host.version is None:
        return None
    return host.version.value


@group.command("render")
def render(
    ctx: typer.Context,
    role: Role = typer.Argument(..., help="deployhost, install or targetnode."),
    node: str | None = typer.Option(
        None, "--node", help="The node's boot MAC (as bootcfg would pass it).", show_default=False
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write here instead of stdout.", show_default=False
    ),
    ssh_keys: list[Path] = typer.Option(
        [], "--ssh-key", help="Another public key file to include (repeatable)."
    ),
    require_keys: bool = typer.Option(
        False, "--require-keys", help="Fail instead of warning when there is no SSH key."
    ),
) -> None:
    """Render ROLE's Ignition config for this site (checked before it is written).

    Keys: your ~/.ssh/authorized_keys (SUDO_USER's under sudo) and each --ssh-key, listed first.
    """
    c = cli(ctx)
    config = c.config()
    mac = None
    if node is not None:
        try:
            mac = normalize_mac(node)
        except ValueError:
            raise UsageError(
                f"--node {node!r} is not a MAC address", hint="like 52:54:00:12:34:56"
            ) from None

    found = collect_keys(authorized_keys_path(c.environ, os.geteuid()), ssh_keys)
    show_keys(c, found)
    if not found.keys:
        if require_keys:
            raise ConfigError(
                "no SSH public key found: nobody could log in to the machines",
                hint="add keys to ~/.ssh/authorized_keys or pass --ssh-key FILE.pub",
            )
        c.err.print(
            "WARNING: no SSH public key found; nobody will be able to log in to machines "
            "booted with this config (add --ssh-key FILE.pub, or --require-keys to refuse)",
            style="bold red",
            markup=False,
        )

    token = None  # with per-machine node credentials, bootcfg adds each node's own
    if config.bootcfg.node_auth == "open" and config.bootcfg.token:
        token = config.bootcfg.token.resolve(c.environ)
    services = systemd_services(config) if role is Role.deployhost else []
    context = site_context(
        config,
        found.keys,
        os_version=host_flatcar_version(config),
        bootcfg_token=token,
        services=services,
    ) | request_context(mac)
    template = resource_dir("ignition", config.paths.source_dir) / f"{role.value}.ign.j2"
    try:
        template_text = read_text(template, what="Ignition template", limit=MAX_TEMPLATE_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"cannot read the template {template}: no such file") from None
    rendered = dumps(render_ignition(template_text, context, source=str(template)))

    if output is None or str(output) == "-":
        typer.echo(rendered, nl=False)
        return
    write_atomic(output, rendered, 0o600 if token else 0o644)
    c.err.print(f"wrote {output} ({role.value}, {len(found.keys)} SSH keys)", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="ignition")
