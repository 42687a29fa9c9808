"""`kpc state`: the machine registry as a whole: export, import, check."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from appliance.cli.common import cli
from appliance.errors import StateError, UsageError
from appliance.inputfile import MIB, read_text
from appliance.state.backend import open_store
from appliance.state.portable import export_document, import_document

group = typer.Typer(
    help="The machine registry as a whole: export, import, check.", no_args_is_help=True
)


MAX_EXPORT_BYTES = 256 * MIB  # tens of thousands of machines; never /dev/zero


@group.command("export")
def export(
    ctx: typer.Context,
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Write here (mode 0600) instead of standard output."
    ),
) -> None:
    """Write every machine and BMC as versioned JSON (install tokens left out)."""
    c = cli(ctx)
    store = open_store(c.config(), c.environ)
    try:
        doc = export_document(store.machines(), store.list_bmcs(), time.time())
    finally:
        store.close()
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    if output is None or str(output) == "-":
        typer.echo(text, nl=False)
        return
    output.touch(mode=0o600, exist_ok=True)
    output.chmod(0o600)
    output.write_text(text, encoding="utf-8")
    c.err.print(
        f"wrote {output}: {len(doc['machines'])} machines, {len(doc['bmcs'])} BMCs",
        markup=False,
    )


@group.command("import")
def import_(
    ctx: typer.Context,
    source: Path = typer.Argument(..., help="A file written by 'kpc state export'."),
    replace: bool = typer.Option(
        False, "--replace", help="Overwrite machines that exist here with different records."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would change; write nothing."),
) -> None:
    """Add the machines and BMCs of an export to this registry. Machines already here and
    different are reported and left alone unless --replace. The whole file is checked
    before anything is written."""
    c = cli(ctx)
    try:
        doc = json.loads(read_text(source, what="registry export", limit=MAX_EXPORT_BYTES))
    except FileNotFoundError:
        raise UsageError(f"{source} does not exist (make one with 'kpc state export')") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise UsageError(f"{source} is not JSON: {exc}") from None
    store = open_store(c.config(), c.environ)
    try:
        report = import_document(store, doc, time.time(), replace=replace, dry_run=dry_run)
    except StateError as exc:
        raise StateError(f"{source}: {exc.message}", hint=exc.hint) from None
    finally:
        store.close()
    verb = "would add" if dry_run else "added"
    c.out.print(
        f"{verb} {len(report.added)} machines, "
        f"{'would replace' if dry_run else 'replaced'} {len(report.replaced)}, "
        f"{report.bmcs} BMC records",
        markup=False,
    )
    for mac in report.conflicts:
        c.err.print(f"conflict: {mac} differs here; kept (use --replace)", markup=False)
    if report.conflicts:
        raise typer.Exit(1)


@group.command("check")
def check(ctx: typer.Context) -> None:
    """Check the registry: SQLite integrity, schema version, orphaned records."""
    c = cli(ctx)
    store = open_store(c.config(), c.environ)
    try:
        problems = store.check()
        count = len(store.machines())
    finally:
        store.close()
    for problem in problems:
        c.err.print(f"problem: {problem}", markup=False)
    if problems:
        raise StateError(
            f"the machine registry has {len(problems)} problem{'s' if len(problems) != 1 else ''}",
            hint="'kpc state export', then import into a fresh registry, keeps what is readable",
        )
    c.out.print(f"the machine registry is consistent ({count} machines)", markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="state")
