"""Which group and profile answer a request. Pure functions of the catalog, the request's
labels and the machine's registry record.

Matching (as matchbox): a group matches when every one of its selectors equals the request's
label of that name; the matching group with the most selectors wins; ties go to the group
whose id sorts first, so the answer never depends on file order. A group without selectors
(at most one, enforced at load time) is the default.

kpc's registry then decides on top of the match (what matchbox lacks):

- boot mode ``local``: ``/ipxe`` answers with a local-disk boot script, whatever matches;
- boot mode ``rescue``: the ``rescue`` profile, except for requests labelled ``os=installed``;
- an installer profile (id ``install`` or ending in ``-install``, matchbox's naming) is only
  served to a machine that is known by MAC and in boot mode ``install``: a machine that
  finished installing never receives an install config again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from appliance.bootcfg.catalog import Catalog, Group, Profile
from appliance.bootcfg.labels import Labels
from appliance.state.model import BootMode, Machine

RESCUE_PROFILE = "rescue"


class Outcome(StrEnum):
    PROFILE = "profile"  # serve ``profile`` (with ``group``'s data, if any)
    LOCAL = "local"  # boot the local disk
    NO_MATCH = "no-match"  # 404
    REFUSED = "refused"  # 403/404 with ``reason``


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str
    group: Group | None = None
    profile: Profile | None = None


def group_matches(group: Group, labels: Labels) -> bool:
    return all(labels.get(key) == value for key, value in group.selector.items())


def select_group(groups: Iterable[Group], labels: Labels) -> Group | None:
    """The matching group with the most selectors; ties broken by group id."""
    candidates = [g for g in groups if group_matches(g, labels)]
    if not candidates:
        return None
    return min(candidates, key=lambda g: (-len(g.selector), g.id))


def is_installer(profile: Profile) -> bool:
    return profile.id == "install" or profile.id.endswith("-install")


def decide(catalog: Catalog, labels: Labels, machine: Machine | None, *, ipxe: bool) -> Decision:
    """What to serve. ``ipxe`` is true for ``/ipxe`` (the only place local boot applies)."""
    if machine is not None and ipxe and machine.boot is BootMode.LOCAL:
        return Decision(Outcome.LOCAL, f"{machine.mac} is in boot mode local")
    if machine is not None and machine.boot is BootMode.RESCUE and labels.get("os") != "installed":
        rescue = catalog.profiles.get(RESCUE_PROFILE)
        if rescue is None:
            return Decision(
                Outcome.REFUSED,
                f"{machine.mac} is in boot mode rescue but there is no profile "
                f"{RESCUE_PROFILE!r} (run 'kpc bootcfg init')",
            )
        return Decision(Outcome.PROFILE, f"{machine.mac} is in boot mode rescue", None, rescue)
    group = select_group(catalog.groups, labels)
    if group is None:
        return Decision(Outcome.NO_MATCH, "no group matches")
    profile = catalog.profiles[group.profile]
    if is_installer(profile):
        if labels.mac is None:
            return Decision(
                Outcome.REFUSED,
                f"installer profile {profile.id!r} is only served to requests with a mac= "
                "label (kpc tracks installs per MAC)",
                group,
                profile,
            )
        if machine is not None and machine.boot is not BootMode.INSTALL:
            return Decision(
                Outcome.REFUSED,
                f"{machine.mac} is in boot mode {machine.boot.value}: not serving installer "
                f"profile {profile.id!r} (use 'kpc nodes set-boot {machine.mac} install' to "
                "reinstall)",
                group,
                profile,
            )
    return Decision(Outcome.PROFILE, f"group {group.id!r}", group, profile)
