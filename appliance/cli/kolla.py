"""`kpc kolla`: Generate Kolla config and run kolla-ansible from the deployer.

kpc kolla genconfig [--force]
kpc kolla bootstrap|prechecks|deploy|pull|post-deploy|reconfigure|upgrade|destroy
          [--dry-run] [--skip-checks] [--yes (destroy)] [-- EXTRA KOLLA-ANSIBLE ARGS]
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from contextlib import closing
from datetime import datetime

import typer
from rich.markup import escape

from appliance.cli.common import Cli, cli, confirm, new_table
from appliance.cli.node_access import print_report
from appliance.config import SiteConfig
from appliance.drivers.docker import Docker
from appliance.errors import Aborted
from appliance.kolla import buildout, imagebuild
from appliance.kolla.client import run_openstack
from appliance.kolla.commands import STEPS, Step
from appliance.kolla.genconfig import PASSWORDS, generate
from appliance.kolla.run import Access, KollaFailed, dry_run, run_step
from appliance.nodes.access import ssh_settings
from appliance.nodes.checks import Check, Policy
from appliance.nodes.gate import NodesUnfit, check_fitness
from appliance.state.backend import open_store
from appliance.state.store import MachineStore

group = typer.Typer(
    help="Generate Kolla config and run kolla-ansible from the deployer.", no_args_is_help=True
)


@group.command("genconfig")
def genconfig(
    ctx: typer.Context,
    force: bool = typer.Option(
        False,
        "--force",
        help="Also replace passwords.yml with new passwords (a deployed cloud stops working "
        "with the old ones).",
    ),
) -> None:
    """Write globals.yml, the inventory (from the ready machines) and passwords.yml.

    Steps: read kolla-ansible's own multinode inventory from the deployer image; assign
    Kolla groups to the ready machines by kolla.roles; check the VIP and the groups; write
    globals.yml and the inventory; generate passwords.yml with kolla-genpwd (only if it is
    missing, or with --force).
    """
    c = cli(ctx)
    config = c.config()
    password = config.registry.password.resolve(c.environ) if config.registry.password else None
    with closing(open_store(config)) as store:
        machines = store.machines()
    result = generate(
        config,
        machines,
        Docker(c.environ),
        force=force,
        registry_password=password,
        source=str(c.config_path),
    )
    for warning in result.warnings:
        c.err.print(f"[bold yellow]warning:[/] {escape(warning)}")
    table = new_table("HOST", "ADDRESS", "MAC", "GROUPS", "OS")
    for host in result.hosts:
        table.add_row(
            escape(host.name),
            host.address,
            host.mac,
            escape(", ".join(host.groups)),
            "flatcar" if host.flatcar else "-",
        )
    c.out.print(table)
    c.out.print(
        f"wrote globals.yml and inventory in {result.config_dir}; "
        f"{PASSWORDS}: {result.passwords.value}"
    )


def _gate(c: Cli, config: SiteConfig, store: MachineStore, step: Step) -> None:
    """The SSH helper's fitness gate; before bootstrap a node may still lack Python."""
    required = frozenset(Check)
    if step.name == "bootstrap":
        required -= {Check.PYTHON}
    report = check_fitness(store, ssh_settings(config, c.environ), policy=Policy(required=required))
    if not report.fit:
        print_report(c.err, report)
        raise NodesUnfit(report, skip_hint="or run anyway with --skip-checks")


def _run(c: Cli, step: Step, extra: list[str], *, dry: bool, skip_checks: bool) -> None:
    config = c.config()
    access = Access(config.ssh.private_key, c.environ.get("SSH_AUTH_SOCK") or None)
    if dry:
        c.out.print(escape(shlex.join(dry_run(config, step.name, extra, access))))
        return
    docker = Docker(c.environ)
    with closing(open_store(config)) as store:
        if not skip_checks:
            _gate(c, config, store, step)
        machines = store.machines()
    outcome = run_step(
        config,
        docker,
        step.name,
        extra,
        access=access,
        machines=machines,
        on_line=lambda line: c.out.out(line, highlight=False),
        now=datetime.now(),
    )
    if outcome.code != 0:
        raise KollaFailed(outcome)
    c.out.print(f"[bold green]kolla {step.name}: done[/] (log: {outcome.log})")


EXTRA_HELP = "Extra arguments for kolla-ansible (ansible-playbook for bootstrap), after '--'."
DRY_HELP = "Show the container command and kolla-ansible argv; run nothing."
SKIP_HELP = "Do not run the node fitness checks ('kpc nodes check') first."


def _command(step: Step) -> Callable[..., None]:
    if step.destructive:

        def destructive(
            ctx: typer.Context,
            extra: list[str] = typer.Argument(None, help=EXTRA_HELP, show_default=False),
            yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
            dry: bool = typer.Option(False, "--dry-run", help=DRY_HELP),
            skip_checks: bool = typer.Option(False, "--skip-checks", help=SKIP_HELP),
        ) -> None:
            c = cli(ctx)
            if not dry and not confirm(
                c,
                f"{step.summary} This cannot be undone. Continue?",
                yes=yes,
            ):
                raise Aborted(f"kolla {step.name} cancelled; nothing was changed")
            _run(c, step, extra or [], dry=dry, skip_checks=skip_checks)

        return destructive

    def command(
        ctx: typer.Context,
        extra: list[str] = typer.Argument(None, help=EXTRA_HELP, show_default=False),
        dry: bool = typer.Option(False, "--dry-run", help=DRY_HELP),
        skip_checks: bool = typer.Option(False, "--skip-checks", help=SKIP_HELP),
    ) -> None:
        _run(cli(ctx), step, extra or [], dry=dry, skip_checks=skip_checks)

    return command


def _add_steps() -> None:
    for step in STEPS.values():
        what = "kpc's Flatcar playbook" if step.kolla is None else f"kolla-ansible {step.kolla}"
        group.command(
            step.name,
            help=f"{step.summary}\n\nSteps: check the nodes (kpc nodes check); run {what} in "
            "the kolla_deployer container; keep the log under paths.log_dir/kolla.",
        )(_command(step))


_add_steps()


@group.command("openstack")
def openstack(
    ctx: typer.Context,
    args: list[str] = typer.Argument(
        None, help="Arguments for the OpenStack client, after '--'.", show_default=False
    ),
) -> None:
    """Run the OpenStack client from the deployer as the cloud's admin.

    Steps: check the admin openrc that 'kpc kolla post-deploy' wrote into kolla.config_dir
    (present, complete, mode 0600); run 'openstack ARGS' in the kolla_deployer container
    with that file sourced (the password never appears on a command line). Example:
    kpc kolla openstack -- token issue
    """
    c = cli(ctx)
    config = c.config()
    code = run_openstack(
        config, Docker(c.environ), args or [], lambda line: c.out.out(line, highlight=False)
    )
    if code != 0:
        raise typer.Exit(code)


images_group = typer.Typer(
    help="Build the release's Kolla images offline with kolla's own builder.",
    no_args_is_help=True,
)
group.add_typer(images_group, name="images")


class _BuildProgress:
    """One line per phase and per image event (every kolla-build line with --verbose)."""

    def __init__(self, c: Cli) -> None:
        self.c = c
        self.started: dict[str, float] = {}

    def phase(self, text: str) -> None:
        self.c.out.print(f"[bold]==>[/] {escape(text)}")

    def event(self, event: buildout.Event) -> None:
        if event.kind == "started":
            self.c.out.print(f"    {escape(event.image)}: building")
        elif event.kind == "built":
            took = buildout.seconds(event.text)
            shown = f" in {took:.0f} s" if took is not None else ""
            self.c.out.print(f"    {escape(event.image)}: [green]built[/]{shown}")
        elif event.kind == "skipped":
            self.c.out.print(f"    {escape(event.image)}: cached")
        elif event.kind == "error" and not self.c.verbose:
            self.c.out.print(f"    {escape(event.image)}: [red]{escape(event.text[:160])}[/]")

    def line(self, line: str) -> None:
        if self.c.verbose:
            self.c.out.out(f"      {line}", highlight=False)


@images_group.command("build")
def images_build(
    ctx: typer.Context,
    names: list[str] = typer.Argument(
        None, help="Kolla images to build (default: the set of kolla.services).", show_default=False
    ),
    set_name: str = typer.Option(
        None,
        "--set",
        help="minimal: what a keystone-only deployment needs; core: kolla-ansible's default "
        "OpenStack core (what this machine can build).",
        show_default=False,
    ),
    no_push: bool = typer.Option(
        False, "--no-push", help="Build only; do not push to the deploy host's registry."
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Build every image again, every step (kolla's --nocache)."
    ),
    threads: int = typer.Option(
        None,
        "--threads",
        min=1,
        max=16,
        help="Images built at once (default: kolla.build_threads).",
        show_default=False,
    ),
) -> None:
    """Build the release's Kolla images with kolla-build, from Debian's mirror and PyPI only.

    Steps: check kpc's base of the release's Debian suite (kpc images base --suite trixie)
    and the kolla_builder image (kpc images build kolla_builder); hash the inputs (release,
    base, overrides, mirror, index, CA bundle); download the service sdists from PyPI and
    resolve the upper constraints once per hash; run kolla-build in the builder container
    (images already built for the same hash are kept: a second run rebuilds nothing; one log
    per image); tag and push each image to the deploy host's registry as
    <registry>/<kolla.upstream_namespace>/<name>:<openstack_tag>.
    """
    c = cli(ctx)
    config = c.config()
    report = imagebuild.build(
        config,
        Docker(c.environ),
        names or [],
        set_name,
        _BuildProgress(c),
        push=not no_push,
        no_cache=no_cache,
        threads=threads,
    )
    table = new_table("IMAGE", "STATUS", "SECONDS", "PUSHED AS")
    for image in report.images:
        took = f"{image.seconds:.0f}" if image.seconds is not None else "-"
        table.add_row(image.name, image.status, took, escape(image.pushed or "-"))
    c.out.print(table)
    for name, why in report.unbuildable.items():
        c.out.print(f"[yellow]not built here:[/] {escape(name)}: {escape(why)}")
    c.out.print(
        f"{len(report.images)} image(s), tag {report.tag}, in {report.seconds:.0f} s "
        f"(inputs {report.digest[:12]}; logs under {report.workdir / 'logs'})"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="kolla")


__all__ = ["KollaFailed", "register"]
