"""The ``kpc`` command: the root app, global options and error mapping."""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from pathlib import Path
from typing import Any

import typer
import typer.core
import typer.main
from rich.console import Console
from rich.markup import escape

from appliance import __version__
from appliance.cli.common import Cli
from appliance.errors import ConfigError, KpcError


def report_error(exc: KpcError, console: Console) -> None:
    """One block per error: what went wrong, each problem on its own line, then the hint."""
    console.print(f"[bold red]error:[/] {escape(exc.message)}")
    if isinstance(exc, ConfigError):
        for problem in exc.problems:
            console.print(f"  {escape(problem)}")
    if exc.hint:
        console.print(f"[bold]hint:[/] {escape(exc.hint)}")


# Each command, and the CLI modules that define it (their ``register(app)``), in the order
# ``kpc --help`` lists them. A module is imported only when one of its commands runs, so a
# command does not pay for the libraries of the others (aiohttp, paramiko, pyghmi, ...).
COMMANDS: dict[str, tuple[str, ...]] = {
    "config": ("config",),
    "ignition": ("ignition",),
    "install-host": ("install_host",),
    "images": ("images",),
    "up": ("services",),
    "down": ("services",),
    "status": ("services",),
    "logs": ("services",),
    "bootcfg": ("bootcfg",),
    "assets": ("assets",),
    "nodes": ("nodes", "node_access"),
    "state": ("state",),
    "bmc": ("bmc",),
    "pxe-all": ("bmc",),
    "lab": ("lab",),
    "kolla": ("kolla",),
    "registry": ("registry",),
    "web": ("web",),
}


@functools.cache
def _commands_of(modules: tuple[str, ...]) -> Any:
    """Import ``modules`` and return the click group their commands form (once per process)."""
    holder = typer.Typer()
    holder.callback()(_no_op)  # a callback keeps a single command inside a group
    for name in modules:
        importlib.import_module(f"appliance.cli.{name}").register(holder)
    return typer.main.get_command(holder)


def _no_op() -> None:
    """Placeholder callback of the groups that hold lazily loaded commands."""


class KpcGroup(typer.core.TyperGroup):
    """Root group: loads commands on demand, and turns every KpcError raised below into a
    message and an exit code."""

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        return [*super().list_commands(ctx), *COMMANDS]

    def get_command(self, ctx: typer.Context, cmd_name: str) -> Any:  # type: ignore[override]
        found = super().get_command(ctx, cmd_name)
        if found is not None or cmd_name not in COMMANDS:
            return found
        return _commands_of(COMMANDS[cmd_name]).get_command(ctx, cmd_name)

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]  # typer vendors click
        try:
            return super().invoke(ctx)
        except KpcError as exc:
            report_error(exc, Console(stderr=True, highlight=False, soft_wrap=True))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            Console(stderr=True).print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=KpcGroup,
    name="kpc",
    help="Deploy-host appliance: PXE-boot bare metal into Flatcar and deploy OpenStack with Kolla.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kpc {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config_file: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Site config file (default: $KPC_CONFIG, else /etc/kpc/kpc.yaml).",
        show_default=False,
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what kpc runs."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    ctx.obj = Cli(config_flag=config_file, verbose=verbose)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run() -> None:
    app()
