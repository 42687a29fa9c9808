"""`kpc config`: Write, check and show the site configuration."""

from __future__ import annotations

import json
from pathlib import Path

import typer
import yaml

from appliance.cli.common import cli
from appliance.config import check_secrets, dump_config, parse_config, security_warnings
from appliance.errors import ConfigError, KpcError, UsageError
from appliance.hostinfo import HostNetwork, detect_network
from appliance.install.osrelease import OsRelease, detect_os
from appliance.outputfile import write_atomic
from appliance.render.config_template import InitValues, config_template

group = typer.Typer(help="Write, check and show the site configuration.", no_args_is_help=True)


def init_values(network: HostNetwork | None, host: OsRelease) -> InitValues:
    """What to write, from what was detected (pure)."""
    if network is not None:
        iface, address, subnet = network.interface, str(network.address), str(network.subnet)
        network_note = network.reason
    else:
        iface, address, subnet = "eth0", "192.0.2.10", "192.0.2.0/24"
        network_note = "nothing (no IPv4 address found): placeholders, CHANGE THEM"
    if host.flavor is not None and host.flavor.value == "flatcar" and host.version is not None:
        version = "host"
        os_note = f"This host runs Flatcar {host.version.value}: nodes get the same version."
    else:
        version = "current"
        os_note = (
            f"This host runs {host.describe()}, not Flatcar: 'current' is the channel's newest "
            "release at install time; pin one (like 3975.2.0) for repeatable installs."
        )
    return InitValues(iface, address, subnet, network_note, version, os_note)


@group.command("init")
def init(
    ctx: typer.Context,
    output: Path | None = typer.Option(
        None,
        "--output",
        "-o",
        help="Where to write ('-' for stdout). Default: the config path "
        "(--config, $KPC_CONFIG, /etc/kpc/kpc.yaml).",
        show_default=False,
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing file."),
) -> None:
    """Write a fully commented site config with values detected on this host."""
    c = cli(ctx)
    target = output if output is not None else c.config_path
    to_stdout = str(target) == "-"
    if not to_stdout and target.exists() and not force:
        raise UsageError(
            f"{target} already exists; kpc does not overwrite it",
            hint="check it with 'kpc config validate', or use --force to replace it "
            "(or -o FILE to write somewhere else)",
        )
    network = detect_network(c.environ)
    values = init_values(network, detect_os(Path("/")))
    text = config_template(values)
    parse_config(text, source="the generated configuration")  # never write a broken file
    if to_stdout:
        typer.echo(text, nl=False)
    else:
        try:
            write_atomic(target, text)
        except OSError as exc:
            raise KpcError(
                f"cannot write {target}: {exc.strerror}",
                hint="run as root for /etc/kpc, or choose another file with -o",
            ) from None
        c.err.print(f"wrote {target}", markup=False)
    c.err.print(
        f"provisioning network: {values.interface} {values.address} in {values.subnet} "
        f"(detected: {values.network_note})",
        markup=False,
    )
    if network is None:
        c.err.print(
            "warning: no IPv4 address found on this host; edit the provisioning section "
            "before using this file",
            style="bold red",
            markup=False,
        )
    c.err.print(f"os.version: {values.os_version} ({values.os_note})", markup=False)
    if not to_stdout:
        c.err.print(f"next: review {target}, then run 'kpc config validate'", markup=False)


@group.command("validate")
def validate(ctx: typer.Context) -> None:
    """Check the site config: syntax, every value, and the secret files' permissions."""
    c = cli(ctx)
    config = c.config()
    errors, notes = check_secrets(config, c.environ)
    if errors:
        raise ConfigError(
            f"{c.config_path}: {len(errors)} problem{'s' if len(errors) != 1 else ''} "
            "with secret references",
            hint="secret files must exist and be readable by their owner only (chmod 600)",
            problems=errors,
        )
    for note in notes:
        c.err.print(f"note: {note}", markup=False)
    for warning in security_warnings(config):
        c.err.print(f"warning: {warning}", markup=False)
    c.out.print(f"{c.config_path}: valid", markup=False)
    c.out.print(
        f"  provisioning: {config.provisioning.interface} {config.provisioning.address} "
        f"in {config.provisioning.subnet}; bootcfg at {config.bootcfg_url}",
        markup=False,
    )
    c.out.print(
        f"  os: flatcar {config.os.channel} {config.os.version}; registry "
        f"{config.registry_address}:{config.registry.port}",
        markup=False,
    )


@group.command("show")
def show(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="JSON instead of YAML."),
) -> None:
    """Print the effective configuration, defaults included (secrets stay references)."""
    data = dump_config(cli(ctx).config())
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False), nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="config")
