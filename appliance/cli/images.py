"""`kpc images`: build kpc's container images (no registry needed)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from appliance.cli.common import Cli, cli, print_table
from appliance.drivers.docker import Docker
from appliance.errors import UsageError
from appliance.images import buildlog, bundle
from appliance.images.base import make_base
from appliance.images.build import BuildOutcome, build_images
from appliance.images.catalog import ImageDef, discover, image_ref, select
from appliance.resources import CHECKOUT, resource_dir

BUILDER = "kolla_builder"

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


class _LoadProgress:
    """Prints each step of a load and the last line of each push."""

    def __init__(self, c: Cli) -> None:
        self.c = c

    def phase(self, text: str) -> None:
        self.c.out.print(f"  {escape(text)}")

    def event(self, event: object) -> None:
        del event

    def line(self, line: str) -> None:
        if self.c.verbose:
            self.c.out.print(f"    {escape(line)}")


@group.command()
def save(
    ctx: typer.Context,
    output: Path = typer.Argument(..., help="The bundle file to write.", show_default=False),
    names: list[str] = typer.Argument(
        None,
        help=f"kpc's images to include (default: all but {BUILDER}, which builds from PyPI).",
        metavar="[NAME]...",
    ),
    kolla: bool = typer.Option(
        False, "--kolla", help="Add the Kolla images of kolla.services (kpc kolla images build)."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite OUTPUT if it exists."),
    kolla_only: bool = typer.Option(
        False, "--kolla-only", help="Only the Kolla images (to bring a new set later)."
    ),
    gzip: bool = typer.Option(
        False, "--gzip", help="Compress the images (about a third of the size; slower to save)."
    ),
) -> None:
    """Write kpc's images (and with --kolla the Kolla set) into one bundle file.

    For a deploy host that cannot build them (Flatcar has no Python or debootstrap; an
    air-gapped site no mirror). Steps: check every image is built; docker save them into one
    archive (shared layers stored once); write OUTPUT, a tar of a manifest (tags, image IDs,
    the archive's SHA-256) and the archive; write OUTPUT.sha256 (check it with sha256sum -c).
    Carry both to the deploy host and run kpc images load OUTPUT there.
    """
    c = cli(ctx)
    config = c.config()
    chosen = [i.name for i in select(discover(_containers_dir(c)), names or [])]
    if not names:  # the builder needs PyPI and a mirror: no use where images are carried in
        chosen = [name for name in chosen if name != BUILDER]
    if kolla_only:
        if names:
            raise UsageError("--kolla-only saves no kpc image", hint="leave out the NAMEs")
        chosen = []
    saved = bundle.save(
        config,
        Docker(c.environ),
        chosen,
        output,
        kolla=kolla or kolla_only,
        force=force,
        compress=gzip,
        on_step=lambda what: c.out.print(f"  {escape(what)}"),
    )
    for image in saved.manifest.images:
        c.out.print(f"  {escape(image.ref)} {image.id[7:19]}")
    c.out.print(
        f"wrote {escape(str(saved.path))} ({_mb(saved.size)}, {len(saved.manifest.images)} "
        f"image(s)) and {escape(saved.checksum_file.name)} in {saved.seconds:.0f} s"
    )


@group.command()
def load(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="A bundle made by kpc images save.", metavar="BUNDLE"),
    no_push: bool = typer.Option(
        False, "--no-push", help="Load into the engine only; do not push Kolla images."
    ),
    check: bool = typer.Option(False, "--check", help="Only check the bundle; load nothing."),
) -> None:
    """Load a bundle made by kpc images save: check it, docker load it, push the Kolla images.

    Steps: check the archive's size and SHA-256 against the manifest (a damaged bundle
    loads nothing); docker load; check every image's ID; push the Kolla images into this
    host's registry (it must be running: kpc up registry), where the nodes pull them.
    """
    c = cli(ctx)
    if check:
        manifest = bundle.verify(path)
        c.out.print(
            f"{escape(str(path))}: intact, {len(manifest.images)} image(s), made by kpc "
            f"{manifest.kpc_version} at {manifest.created}"
        )
        return
    config = c.config()
    loaded = bundle.load(config, Docker(c.environ), path, _LoadProgress(c), push=not no_push)
    for image in loaded.manifest.images:
        where = loaded.pushed.get(image.kolla or "", "")
        c.out.print(
            f"  {escape(image.ref)} {image.id[7:19]}" + (f" → {escape(where)}" if where else "")
        )
    c.out.print(
        f"loaded {len(loaded.manifest.images)} image(s)"
        + (f", pushed {len(loaded.pushed)} Kolla image(s)" if loaded.pushed else "")
        + f" in {loaded.seconds:.0f} s"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="images")
