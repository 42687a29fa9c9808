"""scripts/lint (run by scripts/test before pytest) fails on a finding of each style gate."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

CLEAN = "def double(n: int) -> int:\n    return 2 * n\n"

FINDINGS = {
    # an unused import: ruff check (F401)
    "ruff check": "import os\n\n\n" + CLEAN,
    # well-typed and lint-free, but not as ruff format writes it
    "ruff format --check": "def double(n: int) -> int:\n    return 2*n\n",
    # lint-free and formatted, but untyped: mypy --strict
    "mypy --strict appliance/": "def double(n):\n    return 2 * n\n",
}


def make_tree(tmp_path: Path, module: str) -> Path:
    """A miniature repo: the real scripts/lint, pyproject.toml and .venv, one module."""
    (tmp_path / "scripts").mkdir()
    shutil.copy2(REPO / "scripts" / "lint", tmp_path / "scripts" / "lint")
    shutil.copy2(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    (tmp_path / "appliance").mkdir()
    (tmp_path / "appliance" / "__init__.py").write_text("")
    (tmp_path / "appliance" / "mod.py").write_text(module)
    return tmp_path


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(tree / "scripts" / "lint")], capture_output=True, text=True, check=False, timeout=300
    )


def test_clean_tree_passes(tmp_path: Path) -> None:
    result = lint(make_tree(tmp_path, CLEAN))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("gate", sorted(FINDINGS))
def test_each_gate_fails_on_its_finding(tmp_path: Path, gate: str) -> None:
    result = lint(make_tree(tmp_path, FINDINGS[gate]))
    assert result.returncode == 1, result.stdout + result.stderr
    summary = result.stderr.split("style gate(s) failed", 1)[1]
    failed = [line for line in summary.splitlines() if line.startswith("  - ")]
    assert len(failed) == 1 and failed[0].startswith(f"  - {gate}"), result.stderr


def test_scripts_test_lints_before_pytest() -> None:
    lines = (REPO / "scripts" / "test").read_text().splitlines()
    commands = [line.split()[0] for line in lines if line and not line.startswith("#")]
    assert commands.index("scripts/lint") < commands.index("exec"), commands
