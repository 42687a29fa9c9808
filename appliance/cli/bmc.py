"""`kpc bmc`: Find BMCs and control power and boot devices over IPMI."""

from __future__ import annotations

import typer

group = typer.Typer(
    help="Find BMCs and control power and boot devices over IPMI.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="bmc")
