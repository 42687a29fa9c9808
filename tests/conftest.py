"""Shared test plumbing.

``require(...)`` is how a test says it needs a component (Docker, QEMU, root, a program).
Locally a missing component skips the test with the reason; in CI (CI=true) it fails it:
CI must run every test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(reason: str) -> None:
    """Skip locally, fail in CI."""
    if IN_CI:
        pytest.fail(f"CI must run this test, but: {reason}", pytrace=False)
    pytest.skip(reason)


def require_root() -> None:
    if os.geteuid() != 0:
        missing("needs root")


def require_tool(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            missing(f"{tool} is not installed")


def require_docker() -> None:
    require_tool("docker")
    probe = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        missing("no Docker engine is running (start dockerd)")


def wait_for(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1
) -> object:
    """Poll ``condition`` until it returns something truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception as exc:
            last_error = exc
        else:
            if value:
                return value
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")


@pytest.fixture
def repo() -> Path:
    return REPO
