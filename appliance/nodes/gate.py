"""The fitness gate other commands (the Kolla ones) run before touching the nodes.

    report = check_fitness(store, ssh_settings(config, environ))
    if not report.fit:
        ...show the table (appliance.cli.node_access.print_report)...
        raise NodesUnfit(report)

Host keys met for the first time are recorded in the registry on the way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from appliance.errors import KpcError
from appliance.nodes.access import SshSettings
from appliance.nodes.checks import Policy
from appliance.nodes.hostkeys import record_first_use
from appliance.nodes.readiness import check_nodes, key_sightings
from appliance.nodes.report import CheckReport, NodeReport
from appliance.nodes.targets import select_targets
from appliance.state.store import MachineStore


class NodesUnfit(KpcError):
    """One or more nodes failed the readiness checks (the message lists them)."""

    def __init__(self, report: CheckReport, skip_hint: str | None = None) -> None:
        unfit = report.unfit
        lines = [f"{n.target.name} ({n.target.mac}): {n.reason}" for n in unfit]
        count = len(unfit)
        message = f"{count} of {len(report.nodes)} node{'s' if len(report.nodes) != 1 else ''}"
        message += " not fit:\n  " + "\n  ".join(lines)
        hint = "fix the nodes above and run 'kpc nodes check' again"
        if skip_hint:
            hint += f"; {skip_hint}"
        super().__init__(message, hint)
        self.report = report


def check_fitness(
    store: MachineStore,
    settings: SshSettings,
    *,
    macs: Sequence[str] = (),
    policy: Policy = Policy(),
    on_result: Callable[[NodeReport], None] | None = None,
) -> CheckReport:
    """Check ``macs`` (default: every ready machine) and record first-use host keys.

    Never raises for a node's failure (see ``CheckReport.fit`` / ``.unfit``); raises
    UsageError for unknown MACs and KpcError when no machine is ready.
    """
    targets = select_targets(store, macs)
    report = check_nodes(targets, settings, policy, on_result)
    record_first_use(store, key_sightings(report))
    return report
