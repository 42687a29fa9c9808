"""`kpc bootcfg`: The provisioning HTTP service (matchbox-compatible)."""

from __future__ import annotations

import typer

group = typer.Typer(
    help="The provisioning HTTP service (matchbox-compatible).", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="bootcfg")
