"""`kpc config`: Write, check and show the site configuration."""

from __future__ import annotations

import typer

group = typer.Typer(help="Write, check and show the site configuration.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="config")
