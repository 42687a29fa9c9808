"""`kpc up|down|status|logs`: run kpc's service containers."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Top-level commands; the containers issue fills them in."""
