"""`kpc registry`: The deploy host's Docker registry.

kpc registry mirror [--images NAME,...] [--dry-run]
kpc registry list
"""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from appliance.cli.common import cli, new_table
from appliance.kolla.mirror import (
    ImagePlan,
    default_images,
    image_tag,
    mirror,
    source_registry,
    target_registry,
)

group = typer.Typer(help="The deploy host's Docker registry.", no_args_is_help=True)


class _Bars:
    """mirror.Progress on rich progress bars, one per image."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def planned(self, plan: ImagePlan) -> None:
        pass  # a bar appears when its first bytes move (none in a dry run)

    def advanced(self, plan: ImagePlan, nbytes: int) -> None:
        task = self._tasks.get(plan.repo)
        if task is None:
            task = self._tasks[plan.repo] = self._progress.add_task(
                f"{plan.name}:{plan.tag}", total=plan.missing_bytes
            )
        self._progress.advance(task, nbytes)

    def done(self, plan: ImagePlan) -> None:
        task = self._tasks.get(plan.repo)
        if task is not None:
            self._progress.update(task, completed=plan.missing_bytes)


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


@group.command("mirror")
def mirror_command(
    ctx: typer.Context,
    images: list[str] = typer.Option(
        None,
        "--images",
        "-i",
        help="Images to copy (names under kolla.upstream_namespace, comma-separated or "
        "repeated). Default: the images of kolla.services for kolla.release.",
        show_default=False,
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show what would be copied; copy nothing."
    ),
) -> None:
    """Copy the release's Kolla images from kolla.upstream_registry into the deploy host's
    registry, so the nodes pull from the deploy host.

    Steps: read each image's manifest upstream; skip what the deploy host's registry already
    has (an interrupted mirror resumes); stream the missing layers across; put the manifest.
    """
    c = cli(ctx)
    config = c.config()
    password = config.registry.password.resolve(c.environ) if config.registry.password else None
    names = [n.strip() for item in images or [] for n in item.split(",") if n.strip()]
    if not names:
        names = default_images(config)
    tag = image_tag(config)
    source = source_registry(config)
    target = target_registry(config, password)
    c.err.print(
        f"{'planning' if dry_run else 'mirroring'} {len(names)} image(s), tag {tag}: "
        f"{source.name}/{config.kolla.upstream_namespace} -> {target.name}"
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
    )
    with Progress(*columns, console=c.err, transient=False) as progress:
        plans = mirror(
            source,
            target,
            namespace=config.kolla.upstream_namespace,
            names=names,
            tag=tag,
            progress=_Bars(progress),
            dry_run=dry_run,
        )
    table = new_table("IMAGE", "LAYERS", "TO COPY", "STATE")
    for plan in plans:
        if plan.present:
            state = "already there"
        elif dry_run:
            state = "would copy" if plan.missing else "would tag"
        else:
            state = "copied"
        table.add_row(
            escape(f"{plan.repo}:{plan.tag}"),
            f"{len(plan.blobs) - len(plan.missing)}/{len(plan.blobs)} present",
            _mib(plan.missing_bytes),
            state,
        )
    c.out.print(table)
    total = sum(p.missing_bytes for p in plans)
    verb = "would copy" if dry_run else "copied"
    c.out.print(f"{verb} {_mib(total)} into {target.name}")


@group.command("list")
def list_command(ctx: typer.Context) -> None:
    """List the repositories and tags in the deploy host's registry."""
    c = cli(ctx)
    config = c.config()
    password = config.registry.password.resolve(c.environ) if config.registry.password else None
    target = target_registry(config, password)
    repos = target.repositories()
    if not repos:
        c.out.print(f"{target.name} holds no images (fill it with 'kpc registry mirror')")
        return
    table = new_table("REPOSITORY", "TAGS")
    for repo in repos:
        table.add_row(escape(repo), escape(", ".join(target.tags(repo)) or "-"))
    c.out.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="registry")
