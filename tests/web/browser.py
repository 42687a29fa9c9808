"""Debian's Chromium driven by Playwright (``playwright install`` cannot download here)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import missing

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_browser() -> None:
    if shutil.which("chromium") is None or not Path(CHROMIUM).exists():
        missing("Debian's chromium is not installed (scripts/apt-packages.txt)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("playwright is not installed (pip install -e '.[dev]')")


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium; Playwright gives every launch a fresh temporary profile
    (its --user-data-dir), removed when the browser closes."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()
