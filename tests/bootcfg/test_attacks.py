"""bootcfg as an attacker on the provisioning network sees it (issue #17): every attack is
refused and changes nothing in the registry (compared before and after). Node keys and
signatures come from OpenSSH's own ssh-keygen."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.bootcfg.server import checkin_message
from appliance.bootcfg.service import RateLimit
from appliance.config import SiteConfig, security_warnings
from appliance.state.model import BootMode, MachineState
from tests.bootcfg.conftest import MAC, DataDir
from tests.bootcfg.server import Reply, Server
from tests.conftest import require_tool
from tests.nodekey import Node

VICTIM = MAC
OTHER = "52:54:00:00:00:02"
STRANGER = "52:54:00:66:66:66"
SITE_TOKEN = "site-wide-secret-token"
# the install config carries the machine's own token (the real templates write it to
# /etc/kpc/bootcfg-token); the installed config must carry none
INSTALL_IGN = """{
  "ignition": {"version": "3.3.0"},
  "storage": {"files": [{"path": "/etc/kpc/bootcfg-token",
    "contents": {"source": {{ ("data:," ~ bootcfg_token) | json }}}}]}
}
"""
TARGET_IGN = """{
  "ignition": {"version": "3.3.0"},
  "storage": {"files": [{"path": "/etc/kpc/bootcfg-token",
    "contents": {"source": {{ ("data:," ~ bootcfg_token) | json }}}}]}
}
"""


@pytest.fixture
def nodes(tmp_path: Path) -> dict[str, Node]:
    require_tool("ssh-keygen")
    return {name: Node(tmp_path, name) for name in ("victim", "other", "attacker")}


@pytest.fixture
def secure(kpc_data: DataDir, tmp_path: Path) -> Iterator[Server]:
    kpc_data.file("ignition", "install.ign.j2", INSTALL_IGN)
    kpc_data.file("ignition", "targetnode.ign.j2", TARGET_IGN)
    srv = Server(
        kpc_data.root,
        tmp_path / "machines.db",
        node_auth="per-machine",
        token=SITE_TOKEN,  # set, but per-machine mode must never hand it out
        max_unknown=5,
        new_machines=RateLimit(600),
    ).start()
    try:
        yield srv
    finally:
        srv.stop()


def snapshot(srv: Server) -> tuple[Any, ...]:
    return (tuple(srv.store.machines()), tuple(srv.store.list_bmcs()))


def token_in(reply: Reply) -> str:
    files = reply.json()["storage"]["files"]
    (source,) = [f["contents"]["source"] for f in files if f["path"] == "/etc/kpc/bootcfg-token"]
    return str(source).removeprefix("data:,")


def install(srv: Server, mac: str, node: Node) -> str:
    """The legitimate install: PXE, install config (with its token), install-complete."""
    assert srv.get(f"/ipxe?mac={mac}").status == 200
    token = token_in(srv.get(f"/ignition?mac={mac}"))
    assert token
    reply = complete(srv, mac, token, node.public)
    assert reply.status == 200, reply.text
    return token


def complete(srv: Server, mac: str, token: str | None, host_key: str | None) -> Reply:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = {"host_key": host_key} if host_key is not None else {}
    return srv.post(f"/install-complete?mac={mac}", body, headers=headers)


def checkin(
    srv: Server,
    mac: str,
    node: Node,
    facts: dict[str, Any],
    *,
    at: int | None = None,
    sign_body: bytes | None = None,
    sign_mac: str | None = None,
    namespace: str = "kpc-checkin",
) -> Reply:
    body = json.dumps(facts).encode()
    when = int(time.time()) if at is None else at
    message = checkin_message(sign_mac or mac, when, body if sign_body is None else sign_body)
    headers = {"X-Kpc-Time": str(when), "X-Kpc-Signature": node.sign(message, namespace)}
    return srv.post(f"/checkin?mac={mac}", raw=body, headers=headers)


FACTS = {"hostname": "victim", "address": "198.18.0.21", "bmc_address": "198.18.1.21"}
EVIL = {"hostname": "evil", "address": "198.18.0.99", "bmc_address": "198.18.1.99"}


def test_the_legitimate_life_cycle_works(secure: Server, nodes: dict[str, Node]) -> None:
    install(secure, VICTIM, nodes["victim"])
    m = secure.store.get(VICTIM)
    assert m is not None
    assert (m.state, m.boot, m.install_token) == (MachineState.INSTALLED, BootMode.LOCAL, None)
    assert m.ssh_host_key == " ".join(nodes["victim"].public.split()[:2])
    reply = checkin(secure, VICTIM, nodes["victim"], FACTS)
    assert reply.status == 200, reply.text
    m = secure.store.get(VICTIM)
    assert m is not None and m.state is MachineState.READY
    assert (m.management_address, m.bmc_address) == ("198.18.0.21", "198.18.1.21")


def test_no_unauthenticated_read_hands_out_a_write_secret(
    secure: Server, nodes: dict[str, Node]
) -> None:
    install(secure, OTHER, nodes["other"])
    for path in (
        f"/ignition?mac={OTHER}&os=installed",  # an installed machine's config
        "/ignition?os=installed",
        f"/ignition?mac={STRANGER}&os=installed",
        f"/ignition?mac={OTHER}",  # installer refused to a machine that finished
        f"/metadata?mac={OTHER}",
        f"/ipxe?mac={OTHER}",
    ):
        reply = secure.get(path)
        assert SITE_TOKEN not in reply.text, path
        if reply.status == 200 and path.startswith("/ignition"):
            assert token_in(reply) == "", path


def test_forged_install_complete_is_refused_and_changes_nothing(
    secure: Server, nodes: dict[str, Node]
) -> None:
    secure.get(f"/ipxe?mac={VICTIM}")
    victim_token = token_in(secure.get(f"/ignition?mac={VICTIM}"))
    other_token = install(secure, OTHER, nodes["other"])
    before = snapshot(secure)
    attacker = nodes["attacker"].public
    for mac, token in (
        (VICTIM, None),  # no token
        (VICTIM, "guess"),  # a wrong one
        (VICTIM, SITE_TOKEN),  # the site-wide one
        (VICTIM, other_token),  # another machine's (leaked) token
        (STRANGER, victim_token),  # a MAC kpc has not seen: cannot pre-empt its install
        (OTHER, other_token),  # a used token, with another host key: cannot move OTHER
    ):
        reply = complete(secure, mac, token, attacker)
        assert reply.status == 403, (mac, token, reply.text)
        assert victim_token not in reply.text
    assert complete(secure, VICTIM, victim_token, None).status == 403  # no host key
    assert snapshot(secure) == before
    assert secure.store.get(STRANGER) is None


def test_a_reinstall_cannot_be_cancelled_with_the_old_token(
    secure: Server, nodes: dict[str, Node]
) -> None:
    old = install(secure, VICTIM, nodes["victim"])
    secure.store.set_boot(VICTIM, BootMode.INSTALL, now=10.0)  # kpc nodes set-boot … install
    before = snapshot(secure)
    assert complete(secure, VICTIM, old, nodes["victim"].public).status == 403
    assert snapshot(secure) == before
    assert "#!ipxe" in secure.get(f"/ipxe?mac={VICTIM}").text  # the reinstall goes ahead
    m = secure.store.get(VICTIM)
    assert m is not None and m.boot is BootMode.INSTALL


def test_install_complete_retried_after_a_lost_answer_is_harmless(
    secure: Server, nodes: dict[str, Node]
) -> None:
    token = install(secure, VICTIM, nodes["victim"])
    before = snapshot(secure)
    assert complete(secure, VICTIM, token, nodes["victim"].public).status == 200
    assert snapshot(secure) == before


def test_forged_check_ins_are_refused_and_change_nothing(
    secure: Server, nodes: dict[str, Node]
) -> None:
    install(secure, VICTIM, nodes["victim"])
    assert checkin(secure, VICTIM, nodes["victim"], FACTS).status == 200
    before = snapshot(secure)
    victim, attacker = nodes["victim"], nodes["attacker"]
    body = json.dumps(FACTS).encode()
    now = int(time.time())
    attempts = {
        "unsigned": secure.post(f"/checkin?mac={VICTIM}", EVIL),
        "half-signed": secure.post(
            f"/checkin?mac={VICTIM}", EVIL, headers={"X-Kpc-Time": str(now)}
        ),
        "attacker's key": checkin(secure, VICTIM, attacker, EVIL),
        "other body": checkin(secure, VICTIM, victim, EVIL, sign_body=body),
        "other MAC": checkin(secure, VICTIM, victim, EVIL, sign_mac=OTHER),
        "stale": checkin(secure, VICTIM, victim, EVIL, at=now - 3600),
        "other namespace": checkin(secure, VICTIM, victim, EVIL, namespace="file"),
        "garbage signature": secure.post(
            f"/checkin?mac={VICTIM}",
            EVIL,
            headers={"X-Kpc-Time": str(now), "X-Kpc-Signature": "AAAA"},
        ),
        "unknown MAC": checkin(secure, STRANGER, attacker, EVIL),
    }
    for name, reply in attempts.items():
        assert reply.status in (400, 403), (name, reply.status, reply.text)
    assert snapshot(secure) == before
    assert secure.store.get(STRANGER) is None
    assert secure.store.machines(MachineState.READY)[0].mac == VICTIM


def test_a_discovered_machine_cannot_check_in_to_ready(
    secure: Server, nodes: dict[str, Node]
) -> None:
    secure.get(f"/ipxe?mac={STRANGER}")
    before = snapshot(secure)
    assert checkin(secure, STRANGER, nodes["attacker"], EVIL).status == 403
    assert snapshot(secure) == before


def test_unknown_macs_are_capped(secure: Server) -> None:
    for i in range(5):
        assert secure.get(f"/ipxe?mac=52:54:00:aa:00:{i:02x}").status == 200
    before = snapshot(secure)
    reply = secure.get("/ipxe?mac=52:54:00:aa:00:99")
    assert reply.status == 503 and reply.headers.get("Retry-After")
    assert "bootcfg.max_unknown" in reply.text
    assert snapshot(secure)[0] == before[0]
    assert secure.get("/ipxe?mac=52:54:00:aa:00:01").status == 200  # known ones still served


def test_new_macs_are_rate_limited(kpc_data: DataDir, tmp_path: Path) -> None:
    clock = [0.0]
    srv = Server(
        kpc_data.root,
        tmp_path / "m.db",
        node_auth="per-machine",
        new_machines=RateLimit(60, monotonic=lambda: clock[0]),  # 1/s, bursts of 10
    ).start()
    try:
        statuses = [srv.get(f"/ipxe?mac=52:54:00:bb:00:{i:02x}").status for i in range(12)]
        assert statuses == [200] * 10 + [503] * 2
        assert len(srv.store.machines()) == 10
        clock[0] += 1.0
        assert srv.get("/ipxe?mac=52:54:00:bb:00:0b").status == 200
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 100_000 + b"]" * 100_000,  # too deep
        b'{"n": ' + b"9" * 5000 + b"}",  # too long a number
        b'{"hostname": "\xff\xfe"}',  # not UTF-8
        b'{"n": NaN}',
        b'{"n": 1e999}',
        b"\xef\xbb\xbf{}",  # a BOM: not JSON text
    ],
)
def test_hostile_json_bodies_are_400_and_change_nothing(
    secure: Server, nodes: dict[str, Node], body: bytes
) -> None:
    secure.service.max_body = 1 << 20
    token = install(secure, VICTIM, nodes["victim"])
    before = snapshot(secure)
    for path in (f"/checkin?mac={VICTIM}", f"/install-complete?mac={VICTIM}"):
        reply = secure.post(path, raw=body, headers={"Authorization": f"Bearer {token}"})
        assert reply.status == 400, (path, reply.status, reply.text[:200])
    assert snapshot(secure) == before


def test_secure_by_default_and_an_open_posture_is_warned() -> None:
    base = {
        "provisioning": {
            "interface": "eth0",
            "address": "198.18.0.2",
            "subnet": "198.18.0.0/23",
        }
    }
    config = SiteConfig.model_validate(base)
    assert config.bootcfg.node_auth == "per-machine"
    assert security_warnings(config) == []
    opened = SiteConfig.model_validate({**base, "bootcfg": {"node_auth": "open"}})
    (warning,) = security_warnings(opened)
    assert "any MAC" in warning and "any address of this host" in warning
