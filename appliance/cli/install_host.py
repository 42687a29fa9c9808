"""`kpc install-host`: install the deploy host from a live CoreOS, safely."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Top-level command; the install-host issue fills it in."""
