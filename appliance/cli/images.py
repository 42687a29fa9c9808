"""`kpc images`: build kpc's container images (no registry needed)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from appliance.cli.common import Cli, cli, print_table
from appliance.drivers.docker import Docker
from appliance.images import buildlog
from appliance.images.base import make_base
from appliance.images.build import BuildOutcome, build_images
from appliance.images.catalog import ImageDef, discover, image_ref, select
from appliance.resources import CHECKOUT, resource_dir

group = typer.Typer(help="Build kpc's container images (no registry needed).", no_args_is_help=True)


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


class _Progress:
    """Prints one line per image and per Dockerfile step (every line with --verbose)."""

    def __init__(self, c: Cli) -> None:
        self.c = c
        self.seen: set[str] = set()

    def started(self, image: ImageDef, ref: str, index: int, total: int) -> None:
        self.seen = set()
        self.c.out.print(f"[bold][{index}/{total}] {image.name}[/] → {escape(ref)}")

    def line(self, image: ImageDef, line: str) -> None:
        del image
        if self.c.verbose:
            self.c.out.print(f"    {escape(line)}")
            return
        title = buildlog.step_progress(line)
        if title and title not in self.seen:
            self.seen.add(title)
            short = title if len(title) <= 100 else title[:99] + "…"
            self.c.out.print(f"    {escape(short)}")

    def finished(self, outcome: BuildOutcome) -> None:
        self.c.out.print(
            f"    built {outcome.image_id[7:19]} in {outcome.seconds:.1f} s "
            f"({outcome.cached} of {outcome.steps} steps cached, {_mb(outcome.size)})"
        )


def _containers_dir(c: Cli) -> Path:
    return resource_dir("containers", c.config().paths.source_dir)


@group.command()
def base(
    ctx: typer.Context,
    force: bool = typer.Option(False, "--force", help="Make it again even if it exists."),
    suite: str = typer.Option(
        None,
        "--suite",
        help="Debian suite (default: images.debian_suite). Another suite is tagged with its "
        "name: the Kolla deployer and images need the release's suite (kpc/base:trixie).",
        show_default=False,
    ),
) -> None:
    """Make a base image (images.base, or one per --suite) without any registry.

    Steps: if the image is already there, use it (unless --force); otherwise debootstrap
    the suite (minbase) from images.debian_mirror into a scratch folder under /var/tmp, tar
    it, and docker import it as images.base (or images.base's repository:SUITE). Needs root.
    """
    c = cli(ctx)
    config = c.config()
    outcome = make_base(
        config,
        Docker(c.environ),
        force=force,
        suite=suite,
        on_step=lambda what: c.out.print(f"  {escape(what)}"),
    )
    if outcome.built:
        c.out.print(f"made {outcome.ref} ({outcome.image_id[7:19]}) in {outcome.seconds:.0f} s")
    else:
        c.out.print(
            f"{outcome.ref} is already there ({outcome.image_id[7:19]}); --force remakes it"
        )


@group.command()
def build(
    ctx: typer.Context,
    names: list[str] = typer.Argument(
        None, help="Images to build (default: all).", metavar="[NAME]..."
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Ignore the build cache."),
) -> None:
    """Build kpc's images from containers/<name>/Dockerfile, FROM images.base.

    Steps per image: assemble the build context (plus kpc's wheel for images that install
    kpc), build with BuildKit with the site's Debian mirror, Python index and CA bundle (a
    build secret, never stored in a layer), tag {images.prefix}/<name>:latest with labels
    for kpc's version and source revision. Stops at the first failure and shows the failing
    step's output.
    """
    c = cli(ctx)
    config = c.config()
    chosen = select(discover(_containers_dir(c)), names or [])
    outcomes = build_images(
        config,
        Docker(c.environ),
        chosen,
        _Progress(c),
        checkout=CHECKOUT,
        environ=c.environ,
        no_cache=no_cache,
    )
    total = sum(o.seconds for o in outcomes)
    c.out.print(f"built {len(outcomes)} image(s) in {total:.1f} s")


@group.command("list")
def list_images(ctx: typer.Context) -> None:
    """Show kpc's images: tag, ID, size, creation time, kpc version and source revision."""
    c = cli(ctx)
    config = c.config()
    docker = Docker(c.environ)
    docker.ping()
    rows = [["IMAGE", "ID", "SIZE", "CREATED", "VERSION", "REVISION"]]
    refs = [config.images.base] + [image_ref(config, n) for n in discover(_containers_dir(c))]
    for ref in refs:
        info = docker.image(ref)
        if info is None:
            rows.append([ref, "(not built)", "-", "-", "-", "-"])
            continue
        created = info.created.strftime("%Y-%m-%dT%H:%M") if info.created else "-"
        rows.append(
            [
                ref,
                info.id[7:19],
                _mb(info.size).replace(" ", ""),
                created,
                info.labels.get("org.opencontainers.image.version", "-"),
                info.labels.get("org.opencontainers.image.revision", "-"),
            ]
        )
    print_table(c, rows[0], rows[1:])


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="images")
