"""`kpc nodes check|exec|ssh`: SSH access to provisioned nodes (added to the nodes group)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Adds its commands to ``appliance.cli.nodes.group``; the SSH issue fills them in."""
