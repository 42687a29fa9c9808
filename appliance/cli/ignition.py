"""`kpc ignition`: Render Ignition configs (deployhost, install, targetnode)."""

from __future__ import annotations

import typer

group = typer.Typer(
    help="Render Ignition configs (deployhost, install, targetnode).", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="ignition")
