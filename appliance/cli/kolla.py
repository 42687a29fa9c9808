"""`kpc kolla`: Generate Kolla config and run kolla-ansible from the deployer."""

from __future__ import annotations

import typer

group = typer.Typer(
    help="Generate Kolla config and run kolla-ansible from the deployer.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="kolla")
