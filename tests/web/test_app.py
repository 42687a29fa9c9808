"""The web view over HTTP: authentication, CSRF, pages, the feed, audited actions."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from appliance.errors import ConfigError
from appliance.state.model import BootMode
from tests.bmc.conftest import PASSWORD as BMC_PASSWORD
from tests.bmc.conftest import USER as BMC_USER
from tests.bmc.conftest import Sims
from tests.conftest import wait_for
from tests.web.conftest import MACS, seed
from tests.web.server import PASSWORD, Client, WebServer, write_config
from tests.web.test_pure import ANSIBLE

PAGES = ["/", f"/machines/{MACS[0]}", "/kolla", "/kolla/20261129T001000-deploy.log"]
API = ["/api/machines", f"/api/machines/{MACS[0]}/console", "/events"]


def test_nothing_is_served_without_a_login(web_server: WebServer) -> None:
    anonymous = Client(web_server.url)
    for path in PAGES:
        reply = anonymous.request(path)
        assert reply.status == 303, path
        assert reply.headers["Location"].startswith("/login?next="), path
        assert "52:54:00" not in reply.text
    for path in API:
        reply = anonymous.request(path)
        assert reply.status == 401, path
        assert "52:54:00" not in reply.text
    post = anonymous.request(f"/machines/{MACS[0]}/actions", {"action": "boot-local"})
    assert post.status == 303
    assert anonymous.request("/healthz").text == "ok\n"


def test_wrong_password_or_name_is_refused_and_the_secret_never_rendered(
    web_server: WebServer,
) -> None:
    c = Client(web_server.url)
    wrong = c.login(password="not-it")
    assert wrong.status == 401 and "Wrong password" in wrong.text
    bad_name = c.login(user="<script>")
    assert bad_name.status == 401 and "Name:" in bad_name.text and "<script>" not in bad_name.text
    assert c.request("/").status == 303
    assert c.login().status == 303
    for path in [*PAGES, *API[:2]]:
        assert PASSWORD not in c.request(path).text


def test_pages_render_for_a_logged_in_operator(client: Client, web_server: WebServer) -> None:
    rack = client.request("/")
    assert rack.status == 200
    assert "default-src 'none'" in rack.headers["Content-Security-Policy"]
    assert all(f'id="m-{mac}"' in rack.text for mac in MACS)
    assert 'id="count-installing">1<' in rack.text and 'id="count-ready">1<' in rack.text
    machine = client.request(f"/machines/{MACS[2]}")
    assert machine.status == 200
    assert "node2" in machine.text and "198.18.1.22" in machine.text
    assert "installed → ready" not in machine.text  # went discovered -> ready at check-in
    assert "discovered → ready" in machine.text and "checkin" in machine.text
    assert client.request("/machines/52:54:00:ff:ff:ff").status == 404
    assert client.request("/machines/not-a-mac").status == 404
    filtered = client.request("/?state=installing")
    assert len(re.findall(r'<tr id="m-[^>]* hidden>', filtered.text)) == len(MACS) - 1


def test_the_feed_sends_what_changed(client: Client, web_server: WebServer) -> None:
    rack = web_server.site.rack
    cursor = rack.cursor
    web_server.store.set_boot(MACS[3], BootMode.LOCAL, 200.0)
    wait_for(lambda: rack.cursor > cursor, 5, "the rack to see the change")
    with socket.create_connection(("127.0.0.1", web_server.port), timeout=5) as sock:
        cookie = "; ".join(f"{c.name}={c.value}" for c in client.jar)
        sock.sendall(
            f"GET /events?since={cursor} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n".encode()
        )
        received = b""
        while b"\n\n" not in received.partition(b"\r\n\r\n")[2]:
            received += sock.recv(65536)
    body = received.partition(b"\r\n\r\n")[2].decode()
    data = json.loads(body.split("data: ", 1)[1].split("\n", 1)[0])
    assert [r["mac"] for r in data["rows"]] == [MACS[3]]
    assert data["rows"][0]["boot"] == "local"
    assert data["counts"]["total"] == len(MACS)


def test_actions_need_the_form_token_a_same_origin_and_a_confirmation(
    client: Client, web_server: WebServer
) -> None:
    path = f"/machines/{MACS[0]}/actions"
    form = {"action": "boot-local", "mode": "do", "confirm": "yes"}
    assert client.request(path, form).status == 403  # no CSRF token
    token = client.csrf(f"/machines/{MACS[0]}")
    other = client.request(path, {**form, "csrf": token}, headers={"Origin": "http://evil.test"})
    assert other.status == 403
    ask = client.request(path, {"action": "boot-local", "csrf": token})
    assert ask.status == 200 and "This will set boot mode of" in ask.text
    unconfirmed = client.request(path, {"action": "boot-local", "mode": "do", "csrf": token})
    assert "Yes, do it" in unconfirmed.text
    dry = client.request(path, {"action": "boot-local", "mode": "dry-run", "csrf": token})
    assert "dry run: would set boot mode" in dry.text
    assert web_server.store.get(MACS[0]).boot is BootMode.INSTALL  # type: ignore[union-attr]
    done = client.request(path, {**form, "csrf": token})
    assert done.status == 200 and "done: set boot mode" in done.text
    assert web_server.store.get(MACS[0]).boot is BootMode.LOCAL  # type: ignore[union-attr]
    audit = [e for e in web_server.store.events(MACS[0]) if e.kind == "action"]
    assert [(e.detail["who"], e.detail["dry_run"], e.detail["ok"]) for e in audit] == [
        ("alice", True, True),
        ("alice", False, True),
    ]
    assert client.request(path, {"action": "erase-everything", "csrf": token}).status == 400


def test_a_power_action_without_a_known_bmc_says_so(client: Client) -> None:
    token = client.csrf(f"/machines/{MACS[0]}")
    reply = client.request(
        f"/machines/{MACS[0]}/actions", {"action": "power-off", "mode": "dry-run", "csrf": token}
    )
    assert reply.status == 400 and "kpc knows no BMC for" in reply.text


def test_read_only_by_default(tmp_path: Path) -> None:
    server = WebServer(write_config(tmp_path)).start()
    try:
        c = Client(server.url)
        c.login()
        page = c.request(f"/machines/{MACS[0]}")
        assert page.status == 404 or "Actions" not in page.text
        token = c.csrf("/")
        reply = c.request(f"/machines/{MACS[0]}/actions", {"action": "boot-local", "csrf": token})
        assert reply.status == 403 and "actions are off" in reply.text
    finally:
        server.stop()


def test_proxy_header_mode(tmp_path: Path) -> None:
    config = write_config(tmp_path, proxy_header="X-Remote-User", password=None)
    server = WebServer(config).start()
    try:
        c = Client(server.url)
        assert c.request("/").status == 401
        assert c.request("/", headers={"X-Remote-User": "carol"}).status == 200
        assert c.request("/login").status == 404
    finally:
        server.stop()


def test_missing_or_weak_authentication_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs authentication"):
        WebServer(write_config(tmp_path, password=None))
    with pytest.raises(ConfigError, match="shorter than 12"):
        WebServer(write_config(tmp_path, secret_text="short"))
    with pytest.raises(ConfigError, match="not both"):
        WebServer(write_config(tmp_path, proxy_header="X-Remote-User"))


def test_console_tail_in_the_lab(tmp_path: Path) -> None:
    servers = tmp_path / "servers"
    (servers / "node0").mkdir(parents=True)
    serial = servers / "node0" / "serial.log"
    serial.write_text("SeaBIOS\n\x1b[2Jbooting Flatcar\nlogin: ")
    spec = {
        "name": "node0",
        "firmware": "bios",
        "memory_mib": 512,
        "mac": MACS[0],
        "netns": None,
        "tap": "t0",
        "disk": str(servers / "d"),
        "serial_log": str(serial),
        "qmp_socket": str(servers / "q"),
        "qemu_log": str(servers / "l"),
    }
    (servers / "node0" / "vm.json").write_text(json.dumps(spec))
    seed(tmp_path / "machines.db")
    server = WebServer(write_config(tmp_path, serial_logs=str(servers))).start()
    try:
        c = Client(server.url)
        c.login()
        page = c.request(f"/machines/{MACS[0]}").text
        assert "booting Flatcar" in page and "\x1b" not in page
        api = json.loads(c.request(f"/api/machines/{MACS[0]}/console").text)
        assert api["lines"] == ["SeaBIOS", "booting Flatcar", "login: "]
        assert "Serial console" not in c.request(f"/machines/{MACS[1]}").text
    finally:
        server.stop()


def test_kolla_run_page(client: Client, web_server: WebServer) -> None:
    kolla = web_server.config.paths.log_dir / "kolla"
    kolla.mkdir(parents=True)
    (kolla / "20261129T001000-deploy.log").write_text(ANSIBLE)
    page = client.request("/kolla")
    assert "Interface eth9 not present on node2" in page.text and "failed" in page.text
    tail = json.loads(client.request("/api/kolla/20261129T001000-deploy.log").text)
    assert tail["task"] == "prechecks : Checking the api_interface is present"
    assert client.request("/kolla/../../etc/passwd").status in (404, 303)


def test_a_power_action_reaches_a_real_bmc_and_is_audited(tmp_path: Path) -> None:
    """Power off through the BMC simulator over IPMI on loopback, confirmed, then audited."""
    sims = Sims(tmp_path)
    sim = sims.start("127.19.0.1", power="on")
    seed(tmp_path / "machines.db")
    config = write_config(tmp_path, actions=True)
    text = config.read_text().replace(
        "bmc:\n",
        f"bmc:\n  user: {BMC_USER}\n  hosts:\n  - {{address: 127.19.0.1, name: '{MACS[0]}'}}\n",
    )
    config.write_text(text)
    server = WebServer(config, {"KPC_TEST_BMC_PASSWORD": BMC_PASSWORD}).start()
    try:
        c = Client(server.url)
        c.login()
        token = c.csrf(f"/machines/{MACS[0]}")
        path = f"/machines/{MACS[0]}/actions"
        ask = c.request(path, {"action": "power-off", "csrf": token})
        assert "via BMC 52:54:00:aa:00:00 (127.19.0.1)" in ask.text
        assert "without a clean shutdown" in ask.text
        assert sim.events() == []  # asking sends nothing
        done = c.request(
            path, {"action": "power-off", "mode": "do", "confirm": "yes", "csrf": token}
        )
        assert done.status == 200 and "done: " in done.text, done.text
        wait_for(sim.events, 5, "the BMC's record of the command")
        assert [e["action"] for e in sim.events()] == ["power_off"]
        page = c.request(f"/machines/{MACS[0]}").text
        assert BMC_PASSWORD not in page and BMC_PASSWORD not in done.text
        (audit,) = [e for e in server.store.events(MACS[0]) if e.kind == "action"]
        assert audit.detail["power"] and audit.detail["ok"] and audit.detail["who"] == "alice"
        wait_for(
            lambda: server.site.rack.rows[MACS[0]].power == audit.detail["result"],
            5,
            "the rack to show the last power result",
        )
    finally:
        server.stop()
        sims.stop_all()


def test_repeated_wrong_passwords_are_throttled_per_address(web_server: WebServer) -> None:
    c = Client(web_server.url)
    for _ in range(web_server.site.throttle.limit):
        assert c.login(password="guess").status == 401
    refused = c.login()  # even the right password waits now
    assert refused.status == 429 and "Too many failed sign-ins" in refused.text
    assert c.request("/").status == 303
    web_server.site.throttle.failures.clear()  # the window has passed
    assert c.login().status == 303
