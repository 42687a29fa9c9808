"""The web view in a real browser (Debian's Chromium, driven by Playwright).

An operator logs in, watches a machine go through its life live while the test drives a
real bootcfg on the same registry, filters the rack, opens the machine's page and performs
an enabled action through its confirmation; without a login nothing is shown.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.state.model import BootMode
from tests.bootcfg.conftest import SITE, DataDir, kpc_layout
from tests.bootcfg.server import Server
from tests.web.browser import chromium, require_browser
from tests.web.conftest import MACS, seed
from tests.web.server import PASSWORD, WebServer, write_config

NEW = "52:54:00:bb:00:01"
FACTS = {"hostname": "web-node", "address": "198.18.0.77", "bmc_address": "198.18.1.77"}
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_browser()
    with chromium() as b:
        yield b


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Server, WebServer]]:
    seed(tmp_path / "machines.db")
    bootcfg = Server(
        kpc_layout(DataDir(tmp_path / "data")).root, tmp_path / "machines.db", site=SITE
    )
    bootcfg.start()
    web = WebServer(write_config(tmp_path, actions=True)).start()
    try:
        yield bootcfg, web
    finally:
        web.stop()
        bootcfg.stop()


def login(page: Any, url: str) -> None:
    page.goto(url + "/")
    assert "/login" in page.url
    page.get_by_label("Your name").fill("alice")
    page.get_by_label("Site web password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_selector("#rack[data-live=yes]", state="attached")


def row(mac: str) -> str:
    return "#m-" + mac.replace(":", "\\:")


def test_refused_without_a_login(browser: Any, stack: tuple[Server, WebServer]) -> None:
    _, web = stack
    page = browser.new_page()
    page.goto(web.url + f"/machines/{MACS[0]}")
    assert page.url.startswith(web.url + "/login")
    assert page.locator("#machine, #rack, tr[data-mac]").count() == 0
    page.get_by_label("Your name").fill("mallory")
    page.get_by_label("Site web password").fill("guessing-wrong")
    page.get_by_role("button", name="Sign in").click()
    assert "Wrong password" in page.get_by_role("alert").inner_text()
    status = page.evaluate("fetch('/api/machines').then(r => r.status)")
    assert status == 401
    page.close()


def test_an_operator_watches_filters_opens_and_acts(
    browser: Any, stack: tuple[Server, WebServer]
) -> None:
    bootcfg, web = stack
    page = browser.new_page(viewport=LAPTOP)
    login(page, web.url)
    assert page.locator("tr[data-mac]").count() == len(MACS)

    # live: a new machine PXE boots, installs and checks in; the page follows each step
    assert bootcfg.get(f"/ipxe?mac={NEW}").status == 200
    page.wait_for_selector(f"{row(NEW)}[data-state=installing]")
    assert page.locator(f'tbody[data-group="installing"] {row(NEW)}').count() == 1
    assert bootcfg.post(f"/install-complete?mac={NEW}").status == 200
    page.wait_for_selector(f"{row(NEW)}[data-state=installed]")
    assert bootcfg.post(f"/checkin?mac={NEW}", FACTS).status == 200
    page.wait_for_selector(f'tbody[data-group="ready"] {row(NEW)}[data-state=ready]')
    assert page.inner_text(f"{row(NEW)} th") == "web-node"
    assert page.inner_text("#count-ready") == "2"
    assert page.inner_text("#count-total") == str(len(MACS) + 1)

    # filter as you type, and by state
    page.get_by_label("Filter").fill("web-no")
    page.wait_for_function("document.getElementById('shown').textContent === '1'")
    assert page.locator("tr[data-mac]:visible").count() == 1
    page.get_by_label("Filter").fill("")
    page.get_by_label("State", exact=True).select_option("installing")
    page.wait_for_function("document.getElementById('shown').textContent === '1'")
    assert page.locator(f"{row(MACS[1])}:visible").count() == 1
    page.get_by_label("State", exact=True).select_option("")

    # the machine's page: its history of requests and states, its facts
    page.get_by_role("link", name="web-node").click()
    page.wait_for_url(f"**/machines/{NEW}")
    history = page.locator("table.history").inner_text()
    for step in ("installing → installed", "install → local", "installed → ready", "ipxe"):
        assert step in history
    assert "198.18.1.77" in page.locator("#h-bmc + dl").inner_text()

    # an enabled action, through its confirmation
    page.get_by_label("Action", exact=True).select_option("boot-install")
    page.get_by_role("button", name="Continue…").click()
    assert "ERASE" in page.get_by_role("alert").inner_text()
    assert web.store.get(NEW).boot is BootMode.LOCAL  # type: ignore[union-attr]
    page.get_by_role("button", name="Yes, do it").click()
    assert page.locator("#result").inner_text().startswith("done: set boot mode")
    assert web.store.get(NEW).boot is BootMode.INSTALL  # type: ignore[union-attr]
    (audit,) = [e for e in web.store.events(NEW) if e.kind == "action"]
    assert (audit.detail["who"], audit.detail["dry_run"]) == ("alice", False)
    page.close()


def test_keyboard_labels_and_a_phone(browser: Any, stack: tuple[Server, WebServer]) -> None:
    _, web = stack
    page = browser.new_page(viewport=PHONE)
    login(page, web.url)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    unlabelled = page.evaluate(
        "[...document.querySelectorAll('input:not([type=hidden]), select')]"
        ".filter(e => e.labels.length === 0).map(e => e.id)"
    )
    assert unlabelled == []
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shots = os.environ.get("KPC_WEB_SCREENSHOTS")
    if shots:
        page.screenshot(path=str(Path(shots) / "web-rack-phone.png"))
    page.close()
