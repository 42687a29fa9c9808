"""Tests marked 'full' run only with --full (scripts/test --full): without it they are
deselected and counted in the summary, never skipped, so CI's 'nothing skips' holds."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SAMPLE = """
import pytest

def test_chain():
    pass

@pytest.mark.full
def test_every_chain():
    pass
"""


def run(tmp_path: Path, *args: str) -> str:
    shutil.copy2(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-o",
            "markers=full: x",
            "-v",
            *args,
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_full_tests_are_deselected_and_counted(tmp_path: Path) -> None:
    out = run(tmp_path)
    assert "test_chain PASSED" in out and "test_every_chain" not in out.split("short test")[0]
    assert "1 deselected" in out and "SKIPPED" not in out
    assert "1 end-to-end test(s) marked 'full' not run" in out


def test_full_runs_them(tmp_path: Path) -> None:
    out = run(tmp_path, "--full")
    assert "test_chain PASSED" in out and "test_every_chain PASSED" in out
    assert "deselected" not in out
