"""Bring an existing matchbox data dir into kpc's: ``kpc bootcfg import-matchbox``.

kpc serves matchbox's files as they are (Go templates rendered natively), so importing is a
checked copy: the source must load with no broken file, and no file kpc already has is
replaced unless asked. Planning is pure (``plan_import``); ``apply_import`` copies each file
through a temporary name, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from appliance.bootcfg.catalog import Catalog


@dataclass(frozen=True)
class ImportPlan:
    copies: tuple[tuple[Path, Path], ...]  # (source, destination), new or replaced
    same: tuple[Path, ...]  # already there with the same content
    conflicts: tuple[Path, ...]  # there with other content (replaced only with force)


def _sources(catalog: Catalog) -> list[Path]:
    """Every file the source catalog serves: groups, profiles, Ignition, generic."""
    files = [g.source for g in catalog.groups]
    files += [p.source for p in catalog.profiles.values()]
    files += [t.path for t in catalog.ignition.values()]
    files += [t.path for t in catalog.generic.values()]
    return sorted(set(files))


def plan_import(source: Catalog, dest: Path, *, force: bool) -> ImportPlan:
    """What copying ``source``'s files into the data dir ``dest`` would do."""
    copies: list[tuple[Path, Path]] = []
    same: list[Path] = []
    conflicts: list[Path] = []
    for path in _sources(source):
        target = dest / path.relative_to(source.data_dir)
        if target.is_file():
            if target.read_bytes() == path.read_bytes():
                same.append(target)
                continue
            conflicts.append(target)
            if not force:
                continue
        copies.append((path, target))
    return ImportPlan(tuple(copies), tuple(same), tuple(conflicts))


def apply_import(plan: ImportPlan) -> None:
    for path, target in plan.copies:
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.part")
        shutil.copyfile(path, part)
        os.replace(part, target)
