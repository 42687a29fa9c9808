"""Which group and profile answer a request. Pure functions of the catalog, the request's
labels and the machine's registry record.

Matching (matchbox's rule): a group matches when every one of its selectors equals the
request's label of that name (a missing label counts as empty, so a selector with an empty
value matches a request without that label). Groups are tried in ``match_order``: the most
selectors first; among groups with as many, the one whose sorted ``key=value,...`` string
is greatest first; identical selectors in file-name order. A group without selectors is the
default. A group whose profile is missing still wins its requests and gets them a 404.

kpc's registry then decides on top of the match (what matchbox lacks):

- boot mode ``local``: ``/ipxe`` answers with a local-disk boot script, whatever matches;
- boot mode ``rescue``: the ``rescue`` profile, except for requests labelled ``os=installed``;
- an installer profile (``is_installer``: "install" a word of its id or file name, as in
  matchbox's examples, or Fedora CoreOS installer arguments) is only served to a machine
  that is known by MAC and in boot mode ``install``: a machine that finished installing
  never receives an install config again.
"""

from __future__ import annotations

import re
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
    return all(labels.values.get(key, "") == value for key, value in group.selector.items())


def select_group(groups: Iterable[Group], labels: Labels) -> Group | None:
    """The first matching group of ``groups`` (a catalog's, already in match order)."""
    return next((g for g in groups if group_matches(g, labels)), None)


# "install" as a word of a profile's id or file name: install, flatcar-install,
# install-reboot, etcd_install.v2 (not "installed", "reinstalled-node").
_INSTALL_WORD = re.compile(r"(?:^|[-_.])install(?:$|[-_.])")
# Kernel arguments that make a live system install to disk (Fedora CoreOS's installer).
_INSTALLER_ARGS = ("coreos.inst.install_dev=", "coreos.inst=yes")


def is_installer(profile: Profile) -> bool:
    """Whether serving ``profile`` may erase a disk: "install" is a word of its id or file
    name (matchbox's examples: ``flatcar-install``, ``install-reboot``), or it boots
    Fedora CoreOS's installer (``coreos.inst.install_dev=``). Such a profile only ever goes
    to a machine in boot mode ``install``."""
    if any(_INSTALL_WORD.search(name.lower()) for name in (profile.id, profile.key)):
        return True
    args = profile.boot.args if profile.boot else ()
    return any(arg.startswith(_INSTALLER_ARGS) for arg in args)


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
    profile = catalog.profiles.get(group.profile)
    if profile is None:
        return Decision(
            Outcome.NO_MATCH,
            f"group {group.id!r} ({group.source.name}) names profile {group.profile!r}, which "
            "is missing or broken",
            group,
        )
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
