"""`kpc lab`: The virtual lab: QEMU servers with simulated BMCs."""

from __future__ import annotations

import typer

group = typer.Typer(help="The virtual lab: QEMU servers with simulated BMCs.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="lab")
