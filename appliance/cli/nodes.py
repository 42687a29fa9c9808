"""`kpc nodes`: Machines kpc has seen: list, show, boot mode, SSH checks."""

from __future__ import annotations

import typer

group = typer.Typer(
    help="Machines kpc has seen: list, show, boot mode, SSH checks.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="nodes")
