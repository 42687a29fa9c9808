"""kpc bootcfg / nodes / assets commands, through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from appliance.cli.main import app
from appliance.state.model import BootMode, MachineState
from appliance.state.sqlite import SqliteStore
from tests.conftest import REPO, wait_for

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl op@site"
MAC = "52:54:00:12:34:56"
runner = CliRunner()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    config = tmp_path / "kpc.yaml"
    config.write_text(
        "provisioning: {interface: eth0, address: 198.18.0.1, subnet: 198.18.0.0/24}\n"
        f"bootcfg: {{data_dir: {tmp_path / 'data'}, port: 8080}}\n"
        "os: {version: 3815.2.0}\n"
        f"paths: {{source_dir: {REPO}}}\n"
    )
    (tmp_path / "op.pub").write_text(KEY + "\n")
    return config


def kpc(config: Path, *args: str, input: str | None = None) -> tuple[int, str]:
    env = {"HOME": str(config.parent / "home"), "KPC_CONFIG": str(config)}
    result = runner.invoke(app, list(args), input=input, env=env)
    return result.exit_code, result.output


def test_init_seeds_and_keeps_operator_edits(site: Path, tmp_path: Path) -> None:
    code, out = kpc(site, "bootcfg", "init", "--ssh-key", str(tmp_path / "op.pub"))
    assert code == 0, out
    data = tmp_path / "data"
    install = json.loads((data / "profiles" / "install.json").read_text())
    assert install["boot"]["kernel"] == "/assets/flatcar/3815.2.0/flatcar_production_pxe.vmlinuz"
    assert "initrd=flatcar_production_pxe_image.cpio.gz" in install["boot"]["args"]
    assert (
        "ignition.config.url=http://198.18.0.1:8080/ignition?uuid=${uuid}&mac=${mac:hexhyp}"
        in install["boot"]["args"]
    )
    installed = json.loads((data / "groups" / "installed.json").read_text())
    assert installed["selector"] == {"os": "installed"}
    assert installed["profile"] == "targetnode"
    assert (data / "ignition" / "install.ign.j2").read_text() == (
        REPO / "ignition" / "install.ign.j2"
    ).read_text()
    assert KEY in (data / "authorized_keys").read_text()
    rescue = json.loads((data / "ignition" / "rescue.ign").read_text())
    assert rescue["passwd"]["users"][0]["sshAuthorizedKeys"] == [KEY]

    (data / "groups" / "installed.json").write_text(json.dumps({**installed, "name": "mine"}))
    code, out = kpc(site, "bootcfg", "init")
    assert code == 0
    assert "kept" in out
    assert json.loads((data / "groups" / "installed.json").read_text())["name"] == "mine"
    code, out = kpc(site, "bootcfg", "init", "--force", "--ssh-key", str(tmp_path / "op.pub"))
    assert json.loads((data / "groups" / "installed.json").read_text())["name"] != "mine"


def _seed_machines(site: Path, tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "data" / "machines.db") as store:
        store.record_request(MAC, address="198.18.0.50", endpoint="ipxe", now=1_700_000_000.0)
        store.install_complete(MAC, now=1_700_000_100.0)
        store.check_in(
            MAC,
            {"hostname": "node1", "address": "198.18.0.21", "bmc_address": "198.18.1.21"},
            "198.18.0.21",
            now=1_700_000_200.0,
        )
        store.record_request("52:54:00:00:00:02", address="198.18.0.51", endpoint="ipxe", now=2.0)
        store.record_request("52:54:00:00:00:03", address=None, endpoint="ipxe", now=3.0)


def test_nodes_list_show_inventory(site: Path, tmp_path: Path) -> None:
    _seed_machines(site, tmp_path)
    code, out = kpc(site, "nodes", "list")
    assert code == 0, out
    assert MAC in out and "ready" in out and "node1" in out and "198.18.0.21" in out
    code, out = kpc(site, "nodes", "list", "--json", "--state", "discovered")
    rows = json.loads(out)
    assert sorted(r["mac"] for r in rows) == ["52:54:00:00:00:02", "52:54:00:00:00:03"]
    code, out = kpc(site, "nodes", "show", "52-54-00-12-34-56")
    assert code == 0
    shown = json.loads(out)
    assert (shown["state"], shown["boot"], shown["bmc_address"]) == (
        "ready",
        "local",
        "198.18.1.21",
    )

    code, out = kpc(site, "nodes", "inventory", "--format", "ansible", "--list")
    assert code == 0, out
    inv = json.loads(out)
    assert inv["ready"]["hosts"] == ["node1"]
    assert inv["discovered"]["hosts"] == ["node-525400000002"]  # ...:03 has no address
    assert inv["_meta"]["hostvars"]["node1"]["ansible_host"] == "198.18.0.21"
    assert inv["_meta"]["hostvars"]["node1"]["ansible_user"] == "core"
    assert inv["_meta"]["hostvars"]["node1"]["kpc_mac"] == MAC
    code, out = kpc(site, "nodes", "inventory", "--host", "node1")
    assert json.loads(out)["kpc_bmc_address"] == "198.18.1.21"
    code, out = kpc(site, "nodes", "inventory", "--host", "nobody")
    assert json.loads(out) == {}


def test_set_boot_and_forget_confirm(site: Path, tmp_path: Path) -> None:
    _seed_machines(site, tmp_path)
    db = tmp_path / "data" / "machines.db"
    code, out = kpc(site, "nodes", "set-boot", MAC, "install", "--dry-run")
    assert code == 0 and "would set" in out
    code, out = kpc(site, "nodes", "set-boot", MAC, "install", input="n\n")
    assert code == 3, out
    with SqliteStore(db) as store:
        machine = store.get(MAC)
        assert machine is not None and machine.boot is BootMode.LOCAL
    code, out = kpc(site, "nodes", "set-boot", MAC, "install", "--yes")
    assert code == 0, out
    code, out = kpc(site, "nodes", "set-boot", MAC, "rescue")
    assert code == 0, out
    with SqliteStore(db) as store:
        machine = store.get(MAC)
        assert machine is not None and machine.boot is BootMode.RESCUE
    code, out = kpc(site, "nodes", "forget", MAC, input="n\n")
    assert code == 3
    code, out = kpc(site, "nodes", "forget", MAC, "--yes")
    assert code == 0
    with SqliteStore(db) as store:
        assert store.get(MAC) is None
        assert len(store.machines(MachineState.DISCOVERED)) == 2
    code, out = kpc(site, "nodes", "show", "zz:zz")
    assert code == 2 and "not a MAC address" in out
    code, out = kpc(site, "nodes", "forget", MAC, "--yes")
    assert code == 1 and "no machine with MAC" in out


def test_assets_list(site: Path, tmp_path: Path) -> None:
    code, out = kpc(site, "assets", "list")
    assert code == 0 and "no assets" in out
    path = tmp_path / "data" / "assets" / "flatcar" / "1.2.3" / "k"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * 2**20)
    (path.parent / ".k.part").write_bytes(b"x")
    code, out = kpc(site, "assets", "list")
    assert "/assets/flatcar/1.2.3/k" in out and ".part" not in out
    code, out = kpc(site, "assets", "fetch", "--channel", "nightly")
    assert code == 2 and "unknown channel" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_runs_the_real_service(site: Path, tmp_path: Path) -> None:
    code, out = kpc(site, "bootcfg", "init", "--ssh-key", str(tmp_path / "op.pub"))
    assert code == 0, out
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance",
            "bootcfg",
            "serve",
            "--listen",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env={**os.environ, "KPC_CONFIG": str(site)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: urllib.request.urlopen(f"{url}/healthz", timeout=1).read() == b"ok\n",
            20,
            "kpc bootcfg serve to answer /healthz",
            alive=proc,
        )
        with urllib.request.urlopen(f"{url}/ignition?mac={MAC}", timeout=5) as resp:
            config = json.loads(resp.read())
        assert config["passwd"]["users"][0]["sshAuthorizedKeys"] == [KEY]
        assert "/install-complete" in json.dumps(config) or "kpc-install" in json.dumps(config)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    assert "serving" in output
    with SqliteStore(tmp_path / "data" / "machines.db") as store:
        machine = store.get(MAC)
        assert machine is not None and machine.state is MachineState.INSTALLING


def test_check_names_each_broken_file_and_exits_nonzero(tmp_path: Path) -> None:
    data = tmp_path / "mb"
    for sub in ("groups", "profiles", "ignition"):
        (data / sub).mkdir(parents=True)
    (data / "profiles" / "p.json").write_text('{"id": "p", "ignition_id": "a.ign"}')
    (data / "profiles" / "q.json").write_text('{"id": "q", "ignition_id": "b.yaml"}')
    (data / "groups" / "good.json").write_text('{"profile": "p"}')
    (data / "groups" / "bad.json").write_text('{"profile": "p", "selector": {"mac": "zz"}}')
    (data / "ignition" / "a.ign").write_text('{"ignition": {"version": "3.4.0"}}')
    (data / "ignition" / "b.yaml").write_text("variant: flatcar\nversion: 1.1.0\n")
    result = runner.invoke(app, ["bootcfg", "check", "--data-dir", str(data)], env={})
    assert result.exit_code == 1, result.output
    assert "1 groups, 2 profiles, 2 Ignition files" in result.output
    assert f"broken: {data / 'groups' / 'bad.json'}: selector.mac" in result.output
    assert f"broken: {data / 'ignition' / 'b.yaml'}: a Butane config" in result.output
    assert "2 broken files" in result.output
    (data / "groups" / "bad.json").unlink()
    (data / "ignition" / "b.yaml").unlink()
    result = runner.invoke(app, ["bootcfg", "check", "--data-dir", str(data)], env={})
    assert result.exit_code == 0, result.output
    assert "ok: every file loads" in result.output


def test_import_matchbox_copies_checked_files_and_never_clobbers(tmp_path: Path) -> None:
    src, dest = tmp_path / "matchbox", tmp_path / "kpc-data"
    for sub in ("groups", "profiles", "ignition/site", "generic"):
        (src / sub).mkdir(parents=True)
    (src / "profiles" / "etcd.json").write_text(
        '{"id": "etcd", "ignition_id": "site/e.ign", "generic_id": "g.tmpl"}'
    )
    (src / "groups" / "node1.json").write_text('{"profile": "etcd", "selector": {"os": "x"}}')
    (src / "ignition" / "site" / "e.ign").write_text('{"ignition": {"version": "{{.v}}"}}')
    (src / "generic" / "g.tmpl").write_text("{{.request.raw_query}}\n")
    base = ["bootcfg", "import-matchbox", str(src), "--data-dir", str(dest)]

    result = runner.invoke(app, [*base, "--dry-run"], env={})
    assert result.exit_code == 0, result.output
    assert "would copy" in result.output and "4 to copy" in result.output
    assert not dest.exists()

    result = runner.invoke(app, base, env={})
    assert result.exit_code == 0, result.output
    assert (
        dest / "ignition" / "site" / "e.ign"
    ).read_text() == '{"ignition": {"version": "{{.v}}"}}'
    assert "every file loads" in result.output

    # kpc's copy edited since: a conflict, nothing copied without --force
    (dest / "groups" / "node1.json").write_text('{"profile": "etcd", "selector": {"os": "y"}}')
    (src / "generic" / "g.tmpl").write_text("changed\n")
    result = runner.invoke(app, base, env={})
    assert result.exit_code == 1
    assert f"conflict: {dest / 'groups' / 'node1.json'} differs" in result.output
    assert (dest / "generic" / "g.tmpl").read_text() == "{{.request.raw_query}}\n"
    result = runner.invoke(app, [*base, "--force"], env={})
    assert result.exit_code == 0, result.output
    assert '"x"' in (dest / "groups" / "node1.json").read_text()

    # a broken source file: named with its line, nothing copied
    (src / "groups" / "bad.json").write_text('{\n"profile": ')
    result = runner.invoke(app, base, env={})
    assert result.exit_code == 1
    assert f"broken: {src / 'groups' / 'bad.json'}:2: not valid JSON" in result.output
    assert not (dest / "groups" / "bad.json").exists()
