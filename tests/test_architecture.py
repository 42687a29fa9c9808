"""The shape of appliance/ (docs/architecture.md): calls run downward, CLI → use cases →
pure parts and drivers, and each driver is the only importer of its library. Checked on the
import statements of every module, so a shortcut fails here instead of in review."""

from __future__ import annotations

import ast
from collections.abc import Iterator

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "appliance"

# library -> the only modules that may import it (paths below appliance/)
OWNERS = {
    "typer": ("cli/",),
    "rich": ("cli/",),
    "paramiko": ("drivers/ssh.py",),
    "python_on_whales": ("drivers/docker.py",),
    "pyghmi": ("drivers/ipmi.py", "drivers/ipmi_server.py"),
    "subprocess": ("drivers/process.py", "drivers/netns.py"),
    "pydantic": ("config.py",),
    "cryptography": ("drivers/",),
}
# what a driver may lean on inside kpc: errors, pure vocabularies, other drivers
DRIVER_MAY_IMPORT = (
    "appliance.errors",
    "appliance.keys",
    "appliance.mac",
    "appliance.drivers",
    "appliance.bmc.protocol",
    "appliance.bmc.jobs",
    "appliance.bmc.backend",
    "appliance.bmc.redfish_jobs",
)


def modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(), str(path))


def imported(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def owned_by(relative: str, owners: tuple[str, ...]) -> bool:
    return any(relative == o or (o.endswith("/") and relative.startswith(o)) for o in owners)


def test_each_library_has_its_owners_only() -> None:
    strays = [
        f"{relative} imports {name}"
        for relative, tree in modules()
        for name in imported(tree)
        if (lib := name.split(".")[0]) in OWNERS and not owned_by(relative, OWNERS[lib])
    ]
    assert not strays, strays


def test_nothing_below_the_cli_imports_it() -> None:
    upward = [
        f"{relative} imports {name}"
        for relative, tree in modules()
        for name in imported(tree)
        if name.startswith("appliance.cli")
        and not relative.startswith("cli/")
        and relative != "__main__.py"
    ]
    assert not upward, upward


def test_drivers_lean_only_on_errors_vocabularies_and_drivers() -> None:
    upward = [
        f"{relative} imports {name}"
        for relative, tree in modules()
        if relative.startswith("drivers/")
        for name in imported(tree)
        if name.startswith("appliance")
        and name != "appliance"
        and not any(name == a or name.startswith(a + ".") for a in DRIVER_MAY_IMPORT)
        and not any(a.startswith(name + ".") for a in DRIVER_MAY_IMPORT)
    ]
    assert not upward, upward


@pytest.mark.parametrize("call", ["print", "input"])
def test_only_the_cli_talks_to_the_terminal(call: str) -> None:
    talkers = [
        f"{relative}:{node.lineno}"
        for relative, tree in modules()
        if not relative.startswith("cli/")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == call
    ]
    assert not talkers, talkers


def test_a_misplaced_import_is_caught() -> None:
    """The checks above would see a stray import (they are not vacuous)."""
    tree = ast.parse("import paramiko\nfrom appliance.cli.common import console\n")
    names = list(imported(tree))
    assert "paramiko" in names and "appliance.cli.common" in names
    assert not owned_by("kolla/run.py", OWNERS["paramiko"])
