"""`kpc assets`: OS images served to booting machines."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from appliance.bootcfg.fetch import fetch_flatcar, find_signing_key, list_assets
from appliance.cli.common import cli
from appliance.errors import UsageError

group = typer.Typer(help="OS images served to booting machines.", no_args_is_help=True)

CHANNELS = ("stable", "beta", "alpha", "lts")
KEY_NAME = "Flatcar_Image_Signing_Key.asc"


@group.command()
def fetch(
    ctx: typer.Context,
    channel: str | None = typer.Option(
        None, help="stable | beta | alpha | lts (default: os.channel)."
    ),
    version: str = typer.Option("current", help="A release such as 3815.2.0, or 'current'."),
    mirror: str | None = typer.Option(
        None, help="Release mirror; {channel} is replaced (default: os.mirror)."
    ),
    key: Path | None = typer.Option(
        None,
        help="Flatcar image signing key (default: SOURCE_DIR/keys/"
        + KEY_NAME
        + ", else the key inside this host's flatcar-install).",
    ),
    data_dir: Path | None = typer.Option(None, help="Default: bootcfg.data_dir."),
    force: bool = typer.Option(False, "--force", help="Download again even if present."),
) -> None:
    """Download Flatcar's PXE kernel, initrd and install image, verified, into the assets.

    Steps: resolve 'current' from the mirror; download each file and its signature into a
    hidden staging directory (an interrupted run resumes); verify every signature with gpgv;
    then rename the staging directory to assets/flatcar/VERSION in one step.
    """
    c = cli(ctx)
    config = c.config()
    chosen = channel or config.os.channel
    if chosen not in CHANNELS:
        raise UsageError(f"unknown channel {chosen!r}", hint=f"one of: {', '.join(CHANNELS)}")
    base = (mirror or config.os.mirror).replace("{channel}", chosen)
    assets = (data_dir or config.bootcfg.data_dir) / "assets"
    candidates = [key] if key is not None else [config.paths.source_dir / "keys" / KEY_NAME]
    last: dict[str, int] = {}

    def progress(name: str, done: int, total: int | None) -> None:
        step = 64 * 1024 * 1024
        if done // step != last.get(name, -1) or done == total:
            last[name] = done // step
            size = f"/{total / 2**20:.0f}" if total else ""
            c.err.print(f"  {name}: {done / 2**20:.0f}{size} MiB")

    with tempfile.TemporaryDirectory(prefix="kpc-key-") as tmp:
        key_file = find_signing_key(candidates, Path(tmp))
        c.err.print(f"fetching Flatcar {version} ({chosen}) from {base}; key {key_file}")
        result = fetch_flatcar(base, version, assets, key_file, progress=progress, force=force)
    if result.already_present:
        c.out.print(
            f"Flatcar {result.version} is already in {result.directory} (--force to refetch)"
        )
    else:
        c.out.print(
            f"installed Flatcar {result.version} in {result.directory} (signatures verified)"
        )


@group.command("list")
def list_(
    ctx: typer.Context,
    data_dir: Path | None = typer.Option(None, help="Default: bootcfg.data_dir."),
) -> None:
    """The files bootcfg serves under /assets/."""
    c = cli(ctx)
    assets = (data_dir or c.config().bootcfg.data_dir) / "assets"
    files = list_assets(assets)
    if not files:
        c.out.print(f"no assets in {assets} (kpc assets fetch)")
        return
    for rel, size in files:
        c.out.print(f"{size / 2**20:10.1f} MiB  /assets/{rel}")


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="assets")
