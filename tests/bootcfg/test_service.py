"""Every endpoint over real HTTP on loopback: answers, state transitions, hostile input."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import aiohttp
import pytest

from appliance.state.model import BootMode, MachineState
from tests.bootcfg.conftest import MAC, SITE, DataDir
from tests.bootcfg.server import Server
from tests.conftest import wait_for

FACTS = {
    "hostname": "node1",
    "os": {"name": "flatcar", "version": "3815.2.0"},
    "interfaces": [{"name": "eth0", "mac": "52-54-00-12-34-56", "addresses": ["198.18.0.21"]}],
    "disks": [{"name": "vda", "size": 10737418240}],
    "address": "198.18.0.21",
    "bmc_address": "198.18.1.21",
}


def test_boot_ipxe_chains_to_ipxe(server: Server) -> None:
    for path in ("/boot.ipxe", "/boot.ipxe.0"):
        reply = server.get(path)
        assert reply.status == 200
        assert reply.text.startswith("#!ipxe\nchain ipxe?uuid=${uuid}&mac=${mac:hexhyp}")


def test_install_life_cycle(server: Server) -> None:
    """discovered -> installing -> installed (boot local) -> ready; no reinstall loop."""
    reply = server.get(f"/ipxe?uuid=&mac={MAC.replace(':', '-')}&domain=&hostname=&serial=")
    assert reply.status == 200
    assert "kernel /assets/flatcar/1.2.3/flatcar_production_pxe.vmlinuz" in reply.text
    assert "\ninitrd /assets/flatcar/1.2.3/flatcar_production_pxe_image.cpio.gz\n" in reply.text
    machine = server.store.get(MAC)
    assert machine is not None
    assert (machine.state, machine.boot) == (MachineState.INSTALLING, BootMode.INSTALL)
    assert machine.last_endpoint == "ipxe"
    assert machine.last_address == "127.0.0.1"

    ign = server.get(f"/ignition?mac={MAC}")
    assert ign.status == 200
    assert ign.headers["Content-Type"].startswith("application/json")
    config = ign.json()
    assert config["storage"]["files"][0]["contents"]["source"] == f"data:,{MAC}"
    assert config["passwd"]["users"][0]["sshAuthorizedKeys"] == SITE["ssh_keys"]

    installed = server.get(f"/ignition?mac={MAC}&os=installed")
    assert installed.status == 200
    assert (
        installed.json()["storage"]["files"][0]["contents"]["source"] == "data:,compute-installed"
    )

    done = server.post(f"/install-complete?mac={MAC}")
    assert done.status == 200
    assert done.json() == {"mac": MAC, "state": "installed", "boot": "local"}

    # the next PXE boot goes to the local disk, and no installer config is handed out
    local = server.get(f"/ipxe?mac={MAC}")
    assert local.status == 200
    assert "sanboot --no-describe --drive 0x80" in local.text
    assert "kernel" not in local.text
    again = server.get(f"/ignition?mac={MAC}")
    assert again.status == 403
    assert "boot mode local" in again.text

    ready = server.post(f"/checkin?mac={MAC}", FACTS)
    assert ready.status == 200
    assert ready.json()["state"] == "ready"
    machine = server.store.get(MAC)
    assert machine is not None
    assert machine.facts["interfaces"][0]["mac"] == MAC
    assert machine.bmc_address == "198.18.1.21"
    assert machine.management_address == "198.18.0.21"


def test_operator_reinstall_and_rescue(server: Server) -> None:
    server.post(f"/install-complete?mac={MAC}")
    server.store.set_boot(MAC, BootMode.RESCUE, now=1.0)
    rescue = server.get(f"/ipxe?mac={MAC}")
    assert "flatcar.autologin" in rescue.text
    machine = server.store.get(MAC)
    assert machine is not None and machine.state is MachineState.RESCUE
    ign = server.get(f"/ignition?mac={MAC}")
    assert ign.json() == {"ignition": {"version": "3.3.0"}, "systemd": {"units": []}}
    server.store.set_boot(MAC, BootMode.INSTALL, now=2.0)
    assert "flatcar_production_pxe.vmlinuz" in server.get(f"/ipxe?mac={MAC}").text
    machine = server.store.get(MAC)
    assert machine is not None and machine.state is MachineState.INSTALLING


def test_metadata_and_generic(data: DataDir, tmp_path: Path) -> None:
    data.profile("p", generic_id="g.txt.j2")
    data.profile("q", generic_id="plain.txt")
    data.group("g", "p", {"os": "x"}, {"pod": {"name": "a"}, "count": 3, "flag": True})
    data.group("h", "q", {"os": "y"})
    data.file("generic", "g.txt.j2", "mac={{ mac }} pod={{ pod.name }} os={{ request.query.os }}\n")
    data.file("generic", "plain.txt", "plain {text}\n")
    srv = Server(data.root, tmp_path / "m.db").start()
    try:
        meta = srv.get(f"/metadata?mac={MAC}&os=x")
        assert meta.status == 200
        lines = meta.text.splitlines()
        assert lines == [  # matchbox's shape, sorted; MAC= only when mac is a selector
            "COUNT=3",
            "FLAG=true",
            "OS=x",
            "POD_NAME=a",
            f"REQUEST_QUERY_MAC={MAC}",
            "REQUEST_QUERY_OS=x",
            f"REQUEST_RAW_QUERY=mac={MAC}&os=x",
        ]
        gen = srv.get(f"/generic?mac={MAC}&os=x")
        assert gen.text == f"mac={MAC} pod=a os=x\n"
        assert srv.get("/generic?os=y").text == "plain {text}\n"
        assert srv.get("/metadata?os=zzz").status == 404
    finally:
        srv.stop()


def test_template_problems_give_an_error_never_a_partial_config(
    data: DataDir, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data.profile("undef", kernel=None, ignition_id="undef.ign.j2")
    data.profile("go", kernel=None, ignition_id="go.ign")
    data.profile("bad", kernel=None, ignition_id="bad.ign.j2")
    data.group("u", "undef", {"os": "u"})
    data.group("g", "go", {"os": "g"})
    data.group("b", "bad", {"os": "b"})
    data.file("ignition", "undef.ign.j2", '{"ignition": {"version": {{ nope | json }}}}')
    go = data.file("ignition", "go.ign", '{"ignition": {"version": "{{.version}}"}}x')
    data.file("ignition", "bad.ign.j2", '{"ignition": {"version": "3.3.0"}, "storage": 5}')
    srv = Server(data.root, tmp_path / "m.db").start()
    try:
        for query, words in (("os=u", "nope"), ("os=g", str(go)), ("os=b", "storage")):
            reply = srv.get(f"/ignition?{query}")
            assert reply.status == 404  # matchbox's answer to a config it cannot render
            assert words in reply.text
            assert "{" not in reply.text.split(":", 1)[0]
        assert any(str(go) in r.getMessage() for r in caplog.records)
    finally:
        srv.stop()


def test_installer_needs_a_mac(server: Server) -> None:
    reply = server.get("/ipxe")
    assert reply.status == 403
    assert "mac=" in reply.text
    assert server.store.machines() == []


@pytest.mark.parametrize(
    "query",
    [
        "mac=52:54:00:12:34",
        "mac=52:54:00:12:34:56%0Ashell",
        "mac=${net0/mac}",
        "hostname=a;reboot",
        "serial=%60id%60",
        "os=installed%20%26%26%20reboot",
        "uuid=1234",
        "mac=52:54:00:12:34:56&mac=52:54:00:12:34:57",
        "Bad!=1",
        "x%0D%0AFORGED=1",  # an empty value must not let a hostile name through
        "x%0D=",
        "%24(id)=",
        "%23!ipxe=",
        "os=x%0D",
    ],
)
def test_hostile_queries_refused(server: Server, query: str) -> None:
    for path in ("/ipxe", "/ignition", "/metadata", "/generic"):
        reply = server.get(f"{path}?{query}")
        assert reply.status == 400, (path, query, reply.text)
        assert reply.text.startswith("bad request: ")
    assert server.post(f"/checkin?{query}", FACTS).status == 400
    assert server.store.machines() == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "expected an object"),
        (json.dumps({"hostname": "a b"}).encode(), "hostname"),
        (json.dumps({"address": "300.1.1.1"}).encode(), "address: not an IPv4"),
        (json.dumps({"interfaces": [{"name": "eth0", "mac": "zz"}]}).encode(), "mac"),
        (json.dumps({"interfaces": [{"name": "a;b"}]}).encode(), "interface name"),
        (json.dumps({"disks": [{"name": "vda", "size": -1}]}).encode(), "size"),
        (json.dumps({"os": {"name": "x" * 100}}).encode(), "os.name"),
    ],
)
def test_bad_checkin_bodies_refused(server: Server, body: bytes, message: str) -> None:
    reply = server.post(f"/checkin?mac={MAC}", raw=body)
    assert reply.status == 400
    assert message in reply.text
    assert server.store.get(MAC) is None


def test_oversized_body_refused(data: DataDir, tmp_path: Path) -> None:
    data.profile("p")
    srv = Server(data.root, tmp_path / "m.db", max_body=1024).start()
    try:
        big = json.dumps({"hostname": "n", "pad": "x" * 5000}).encode()
        assert srv.post(f"/checkin?mac={MAC}", raw=big).status == 413
        assert srv.post(f"/install-complete?mac={MAC}", raw=big).status == 413
        assert srv.store.get(MAC) is None
        assert srv.post(f"/checkin?mac={MAC}", {"hostname": "n"}).status == 200
    finally:
        srv.stop()


def test_write_endpoints_need_the_token_when_set(data: DataDir, tmp_path: Path) -> None:
    data.profile("p")
    srv = Server(data.root, tmp_path / "m.db", token="s3cret-token").start()
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
            for path in (f"/install-complete?mac={MAC}", f"/checkin?mac={MAC}"):
                reply = srv.post(path, FACTS, headers=headers)
                assert reply.status == 401
                assert "s3cret" not in reply.text
        assert srv.store.get(MAC) is None
        ok = {"Authorization": "Bearer s3cret-token"}
        assert srv.post(f"/checkin?mac={MAC}", FACTS, headers=ok).status == 200
        assert srv.post(f"/install-complete?mac={MAC}", headers=ok).status == 200
        assert srv.get("/healthz").status == 200  # reads stay open
    finally:
        srv.stop()


def test_write_endpoints_need_post_and_mac(server: Server) -> None:
    assert server.get(f"/install-complete?mac={MAC}").status == 405
    assert server.post("/checkin", FACTS).status == 400
    assert server.get("/healthz").text == "ok\n"


def test_restart_keeps_state(kpc_data: DataDir, tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    first = Server(kpc_data.root, db).start()
    try:
        first.get(f"/ipxe?mac={MAC}")
        first.post(f"/install-complete?mac={MAC}")
    finally:
        first.stop()
    second = Server(kpc_data.root, db).start()
    try:
        assert "sanboot" in second.get(f"/ipxe?mac={MAC}").text
        machine = second.store.get(MAC)
        assert machine is not None
        assert (machine.state, machine.boot) == (MachineState.INSTALLED, BootMode.LOCAL)
    finally:
        second.stop()


def test_200_concurrent_checkins_lose_nothing(server: Server) -> None:
    macs = [f"52:54:01:00:{i // 256:02x}:{i % 256:02x}" for i in range(200)]

    async def run() -> list[int]:
        async with aiohttp.ClientSession() as session:

            async def one(index: int, mac: str) -> int:
                facts = {**FACTS, "hostname": f"node{index}", "interfaces": []}
                async with session.post(f"{server.url}/checkin?mac={mac}", json=facts) as resp:
                    await resp.read()
                    return resp.status

            return await asyncio.gather(*(one(i, m) for i, m in enumerate(macs)))

    statuses = asyncio.run(run())
    assert statuses == [200] * 200
    ready = server.store.machines(MachineState.READY)
    assert sorted(m.mac for m in ready) == sorted(macs)
    assert {m.hostname for m in ready} == {f"node{i}" for i in range(200)}


def test_data_dir_edits_are_picked_up_and_broken_edits_ignored(
    server: Server, kpc_data: DataDir
) -> None:
    kpc_data.profile("special", args=["special=1"])
    kpc_data.group("special", "special", {"mac": "52:54:00:99:99:99"})
    wait_for(
        lambda: "special=1" in server.get("/ipxe?mac=52:54:00:99:99:99").text,
        5,
        "the new group to be served",
    )
    kpc_data.file("groups", "broken.json", "{oops")
    # the broken file is out of service and named in /healthz; everything else serves
    wait_for(lambda: "groups/broken.json" in server.get("/healthz").text, 5, "/healthz to name it")
    assert "special=1" in server.get("/ipxe?mac=52:54:00:99:99:99").text
    assert server.get(f"/ipxe?mac={MAC}").status == 200
    (kpc_data.root / "groups" / "broken.json").unlink()
    wait_for(lambda: server.get("/healthz").text == "ok\n", 5, "/healthz to be plain ok")


# --- assets ------------------------------------------------------------------------------


@pytest.fixture
def asset(kpc_data: DataDir) -> bytes:
    content = os.urandom(300_000)
    path = kpc_data.root / "assets" / "flatcar" / "1.2.3" / "image.bin"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    (kpc_data.root / "assets" / "flatcar" / ".hidden.part").write_bytes(b"partial")
    (kpc_data.root / "secret.txt").write_text("outside")
    (kpc_data.root / "assets" / "flatcar" / "current").symlink_to("1.2.3")
    (kpc_data.root / "assets" / "escape").symlink_to(kpc_data.root)
    return content


def test_asset_get_head_range(server: Server, asset: bytes) -> None:
    full = server.get("/assets/flatcar/1.2.3/image.bin")
    assert full.status == 200
    assert full.body == asset
    assert int(full.headers["Content-Length"]) == len(asset)
    head = server.request("/assets/flatcar/1.2.3/image.bin", method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert int(head.headers["Content-Length"]) == len(asset)
    part = server.get("/assets/flatcar/1.2.3/image.bin", headers={"Range": "bytes=1000-1999"})
    assert part.status == 206
    assert part.body == asset[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(asset)}"
    tail = server.get("/assets/flatcar/1.2.3/image.bin", headers={"Range": "bytes=-10"})
    assert tail.body == asset[-10:]
    beyond = server.get("/assets/flatcar/1.2.3/image.bin", headers={"Range": "bytes=999999-"})
    assert beyond.status == 416
    via_link = server.get("/assets/flatcar/current/image.bin")
    assert via_link.status == 200 and via_link.body == asset


@pytest.mark.parametrize(
    "path",
    [
        "/assets/",
        "/assets/flatcar",
        "/assets/flatcar/../../secret.txt",
        "/assets/flatcar/%2e%2e/%2e%2e/secret.txt",
        "/assets/..%2fsecret.txt",
        "/assets/flatcar/.hidden.part",
        "/assets/escape/secret.txt",
        "/assets/flatcar//1.2.3/image.bin",
        "/assets/nope.bin",
        "/assets/flatcar%00/x",
    ],
)
def test_asset_paths_that_must_not_be_served(server: Server, asset: bytes, path: str) -> None:
    reply = server.get(path)
    assert reply.status == 404
    assert b"outside" not in reply.body
    assert b"partial" not in reply.body


def test_many_requests_are_recorded(server: Server) -> None:
    server.get(f"/ipxe?mac={MAC}&uuid=16e7d8a7-bfa9-428b-9117-363341bb330b&serial=S1")
    first = server.store.get(MAC)
    assert first is not None and first.first_seen is not None
    assert first.last_seen == first.first_seen  # one request so far
    server.get(f"/metadata?mac={MAC}&os=installed")
    machine = server.store.get(MAC)
    assert machine is not None
    assert machine.uuid == "16e7d8a7-bfa9-428b-9117-363341bb330b"
    assert machine.serial == "S1"
    assert machine.last_endpoint == "metadata"
    assert machine.first_seen == first.first_seen  # kept from the first request
    assert machine.last_seen is not None and machine.last_seen > first.last_seen  # moved on
