"""Shared CLI plumbing: the per-invocation context, config loading, output helpers."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import typer
from rich.console import Console

from appliance.config import SiteConfig, config_path, load_config


@dataclass
class Cli:
    """What the root callback learned from the command line; stored in ``ctx.obj``."""

    config_flag: Path | None = None
    verbose: bool = False
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    out: Console = field(default_factory=lambda: Console(highlight=False, soft_wrap=True))
    err: Console = field(
        default_factory=lambda: Console(stderr=True, highlight=False, soft_wrap=True)
    )
    _config: SiteConfig | None = None

    @property
    def config_path(self) -> Path:
        return config_path(self.config_flag, self.environ)

    def config(self) -> SiteConfig:
        """Load and validate the site config once per invocation."""
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config


def cli(ctx: typer.Context) -> Cli:
    """The Cli object of this invocation (created by the root callback)."""
    obj = ctx.find_root().obj
    if not isinstance(obj, Cli):
        obj = Cli()
        ctx.find_root().obj = obj
    return obj


def confirm(c: Cli, question: str, *, yes: bool) -> bool:
    """Ask a yes/no question on the terminal unless --yes was given."""
    if yes:
        return True
    return typer.confirm(question, default=False, err=True)


def emit_json(data: object) -> None:
    """Machine-readable output: plain JSON on stdout (no highlighting, no re-parsing)."""
    typer.echo(json.dumps(data, indent=2))
