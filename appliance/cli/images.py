"""`kpc images`: Build kpc's container images (no registry needed)."""

from __future__ import annotations

import typer

group = typer.Typer(help="Build kpc's container images (no registry needed).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="images")
