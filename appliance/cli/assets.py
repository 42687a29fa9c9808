"""`kpc assets`: OS images served to booting machines."""

from __future__ import annotations

import typer

group = typer.Typer(help="OS images served to booting machines.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="assets")
