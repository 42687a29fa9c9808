"""Shared test plumbing.

``require(...)`` is how a test says it needs a component (Docker, QEMU, root, a program).
Locally a missing component skips the test with the reason; in CI (CI=true) it fails it:
CI must run every test.

A test marked ``full`` (an end-to-end chain beyond the one CI runs) is left out unless pytest
gets ``--full`` (``scripts/test --full``): deselected and counted, never skipped.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        help="also run the end-to-end tests marked 'full' (scripts/test --full)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--full"):
        return
    full = [item for item in items if item.get_closest_marker("full")]
    if full:
        config.hook.pytest_deselected(items=full)
        items[:] = [item for item in items if not item.get_closest_marker("full")]
        config.stash[_LEFT_FOR_FULL] = len(full)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    left = config.stash.get(_LEFT_FOR_FULL, 0)
    if left:
        terminalreporter.write_line(
            f"{left} end-to-end test(s) marked 'full' not run: scripts/test --full runs them"
        )


_LEFT_FOR_FULL = pytest.StashKey[int]()


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


class GaveUp(AssertionError):
    """Raised by a ``wait_for`` condition when what it waits on can no longer happen (the
    process it waits on died): the wait fails at once instead of at its deadline."""


def wait_for(
    condition: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 0.1,
    *,
    alive: subprocess.Popen[Any] | Sequence[subprocess.Popen[Any]] = (),
) -> object:
    """Poll ``condition`` until it returns something truthy, or fail naming ``what``.

    Other exceptions from ``condition`` count as "not yet" (a server not listening yet) and
    the last one is reported at the deadline. An AssertionError (``GaveUp`` says it best)
    fails the wait at once, and so does any process in ``alive`` that has exited: a dead
    server costs nothing, not the whole timeout.
    """
    processes = [alive] if isinstance(alive, subprocess.Popen) else list(alive)
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        # looked at before the condition: a process that died after doing what was waited
        # for (a VM that powers off after printing its last line) still counts as success
        dead = [process for process in processes if process.poll() is not None]
        try:
            value = condition()
        except AssertionError:
            raise
        except Exception as exc:
            last_error = exc
        else:
            if value:
                return value
        if dead:
            raise GaveUp(
                f"gave up waiting for {what}: {_program(dead[0])} exited with status "
                f"{dead[0].returncode}"
            )
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")


def _program(process: subprocess.Popen[Any]) -> str:
    args = process.args
    words = [str(args)] if isinstance(args, str | bytes | os.PathLike) else [str(a) for a in args]
    return shlex.join(words)[:120]


@pytest.fixture
def repo() -> Path:
    return REPO
