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
from rich.table import Table

from appliance.cli.common import Cli, cli, confirm
from appliance.cli.node_access import print_report
from appliance.config import SiteConfig
from appliance.drivers.docker import Docker
from appliance.errors import Aborted
from appliance.kolla.commands import STEPS, Step
from appliance.kolla.genconfig import PASSWORDS, generate
from appliance.kolla.run import Access, KollaFailed, dry_run, run_step
from appliance.nodes.access import ssh_settings
from appliance.nodes.checks import Check, Policy
from appliance.nodes.gate import NodesUnfit, check_fitness
from appliance.state.sqlite import open_store
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
    table = Table(box=None, pad_edge=False, header_style="bold")
    for title in ("HOST", "ADDRESS", "MAC", "GROUPS", "OS"):
        table.add_column(title)
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


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="kolla")


__all__ = ["KollaFailed", "register"]
