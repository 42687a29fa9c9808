"""Shared CLI plumbing: the per-invocation context, config loading, output helpers."""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from appliance.config import SiteConfig, config_path, load_config
from appliance.errors import KpcError, UsageError
from appliance.mac import normalize_mac


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


def _listen_address(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an IP address (e.g. 0.0.0.0, 127.0.0.1 or ::)"
        ) from None


def listen_option(help: str) -> str | None:
    """A --listen option: an IP address to bind, checked before anything starts."""
    value: str | None = typer.Option(None, "--listen", help=help, callback=_listen_address)
    return value


def port_option(help: str) -> int | None:
    """A --port option: a TCP port, 1 to 65535."""
    value: int | None = typer.Option(None, "--port", help=help, min=1, max=65535)
    return value


def serve_until_stopped(what: str, host: str, port: int, serve: Callable[[], None]) -> None:
    """Run a server's loop; a socket it cannot bind is one error, not a traceback."""
    try:
        serve()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise KpcError(
            f"{what} cannot listen on {host}:{port}: {reason}",
            hint="choose a free port with --port, and an address of this host with --listen",
        ) from None


def parse_mac(value: str) -> str:
    """A MAC address typed on the command line, in kpc's form; UsageError otherwise."""
    try:
        return normalize_mac(value)
    except ValueError:
        raise UsageError(
            f"not a MAC address: {value!r}", hint="write it as aa:bb:cc:dd:ee:ff"
        ) from None


def when(stamp: float | None) -> str:
    """A registry time stamp as the tables show it (UTC), or '-'."""
    if stamp is None:
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def new_table(*columns: str, title: str | None = None) -> Table:
    """kpc's table: no box, bold headers, and cells that wrap inside their column on a narrow
    terminal instead of being cut to '…' (every command with a table also has --json)."""
    table = Table(
        box=None,
        pad_edge=False,
        header_style="bold",
        title=title,
        title_justify="left",
    )
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def print_table(
    c: Cli,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    drop: Sequence[str] = (),
) -> None:
    """Aligned columns, one line per row, never wrapped (so grep and cut work). On a terminal
    narrower than the table, the columns named in ``drop`` are left out, in that order, until
    it fits, and a last line says which ('--json' carries everything)."""
    keep = list(range(len(header)))

    def width() -> int:
        widths = [max(cell_len(str(row[i])) for row in [header, *rows]) for i in keep]
        return sum(widths) + 2 * (len(widths) - 1)

    fitting = c.out.is_terminal or "COLUMNS" in c.environ
    left_out: list[str] = []
    for name in drop:
        if not fitting or width() <= c.out.width:
            break
        keep.remove(list(header).index(name))
        left_out.append(name)
    shown = [[str(row[i]) for i in keep] for row in [header, *rows]]
    widths = [max(cell_len(row[j]) for row in shown) for j in range(len(keep))]
    for row in shown:
        line = "  ".join(
            cell + " " * (w - cell_len(cell)) for cell, w in zip(row, widths, strict=True)
        )
        c.out.print(escape(line.rstrip()), soft_wrap=True)
    if left_out:
        c.out.print(f"({', '.join(left_out)} left out at this width; --json has every field)")
