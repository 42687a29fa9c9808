"""`kpc registry`: The deploy host's Docker registry."""

from __future__ import annotations

import typer

group = typer.Typer(help="The deploy host's Docker registry.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="registry")
