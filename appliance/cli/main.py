"""The ``kpc`` command: the root app, global options and error mapping."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import typer
import typer.core
from rich.console import Console
from rich.markup import escape

from appliance import __version__
from appliance.cli import (
    assets,
    bmc,
    bootcfg,
    config,
    ignition,
    images,
    install_host,
    kolla,
    lab,
    node_access,
    nodes,
    registry,
    services,
)
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


class KpcGroup(typer.core.TyperGroup):
    """Root group: turns every KpcError raised below into a message and an exit code."""

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


for module in (
    config,
    ignition,
    images,
    services,
    bootcfg,
    nodes,
    node_access,
    assets,
    bmc,
    install_host,
    lab,
    kolla,
    registry,
):
    module.register(app)


def run() -> None:
    app()
