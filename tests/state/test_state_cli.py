"""kpc state export | import | check, and the CLI on an etcd site with user auth."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from appliance.cli.main import app
from appliance.drivers.etcd import EtcdClient
from appliance.state.model import Bmc
from appliance.state.sqlite import SqliteStore
from tests.conftest import REPO, require_tool
from tests.state.etcd_cluster import EtcdCluster

MAC = "52:54:00:12:34:56"
OTHER = "52:54:00:00:00:02"
PASSWORD = "etcd-s3cret-for-kpc"
runner = CliRunner()


@pytest.fixture(scope="module")
def etcd_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One member with user auth on: root, and a user 'kpc' allowed everything under t*."""
    require_tool("etcdctl")
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcdauth"), index=1, size=1)
    cluster.start()
    try:
        cluster.wait_healthy()
        ctl = ["etcdctl", "--endpoints", cluster.endpoints[0]]
        for args, stdin in (
            (["user", "add", "root", "--interactive=false"], PASSWORD),
            (["user", "add", "kpc", "--interactive=false"], PASSWORD),
            (["role", "add", "kpc"], None),
            (["role", "grant-permission", "kpc", "readwrite", "t", "--prefix"], None),
            (["user", "grant-role", "kpc", "kpc"], None),
            (["auth", "enable"], None),
        ):
            subprocess.run(ctl + args, input=stdin, text=True, check=True, capture_output=True)
        yield cluster
    finally:
        cluster.stop()


def site(tmp_path: Path, name: str, state: str = "") -> Path:
    config = tmp_path / f"{name}.yaml"
    config.write_text(
        "provisioning: {interface: eth0, address: 198.18.0.1, subnet: 198.18.0.0/24}\n"
        f"bootcfg: {{data_dir: {tmp_path / name}, port: 8080}}\n"
        "os: {version: 3815.2.0}\n"
        f"paths: {{source_dir: {REPO}}}\n" + state
    )
    return config


def etcd_state(cluster: EtcdCluster, prefix: str, user: bool = True) -> str:
    auth = ", user: kpc, password: {env: KPC_TEST_ETCD_PASSWORD}" if user else ""
    return (
        f"state: {{backend: etcd, etcd: {{endpoints: [{cluster.endpoints[0]}], "
        f"prefix: {prefix}{auth}}}}}\n"
    )


def kpc(config: Path, *args: str, password: str = PASSWORD) -> tuple[int, str]:
    env = {
        "HOME": str(config.parent / "home"),
        "KPC_CONFIG": str(config),
        "KPC_TEST_ETCD_PASSWORD": password,
    }
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_a_registry_moves_from_sqlite_to_etcd_and_back(
    tmp_path: Path, etcd_auth: EtcdCluster
) -> None:
    lite = site(tmp_path, "lite")
    with SqliteStore(tmp_path / "lite" / "machines.db") as store:
        store.record_request(MAC, address="198.18.0.5", endpoint="ipxe", now=1.0)
        store.install_complete(MAC, 2.0)
        store.check_in(OTHER, {"hostname": "n2", "address": "198.18.0.22"}, "198.18.0.22", 3.0)
        store.record_bmc(Bmc(address="198.18.1.21", machine_mac=MAC), 4.0)
        store.record_bmc_inventory(
            "198.18.1.21", model="m", serial="s", uuid=None, macs=(MAC,), now=5.0
        )
    code, out = kpc(lite, "state", "export", "-o", str(tmp_path / "reg.json"))
    assert code == 0, out

    prefix = f"t{uuid.uuid4().hex[:10]}/"
    shared = site(tmp_path, "shared", etcd_state(etcd_auth, prefix))
    code, out = kpc(shared, "state", "import", str(tmp_path / "reg.json"), "--dry-run")
    assert code == 0 and "would add 2 machines" in out, out
    code, out = kpc(shared, "nodes", "list", "--json")
    assert json.loads(out) == []
    code, out = kpc(shared, "state", "import", str(tmp_path / "reg.json"))
    assert code == 0, out
    _, listed_lite = kpc(lite, "nodes", "list", "--json")
    code, listed = kpc(shared, "nodes", "list", "--json")
    assert code == 0 and json.loads(listed) == json.loads(listed_lite)
    code, out = kpc(shared, "state", "check")
    assert code == 0 and "consistent (2 machines)" in out, out

    # a second deploy host's view: another config file, same cluster and prefix
    other_host = site(tmp_path, "host2", etcd_state(etcd_auth, prefix))
    code, out = kpc(other_host, "nodes", "show", OTHER)
    assert code == 0 and json.loads(out)["hostname"] == "n2"
    code, out = kpc(other_host, "nodes", "inventory", "--list")
    assert code == 0, out
    assert "198.18.0.22" in out  # the ready machine, recorded through the first host

    code, out = kpc(shared, "state", "export", "-o", str(tmp_path / "back.json"))
    assert code == 0, out
    back = site(tmp_path, "back")
    code, out = kpc(back, "state", "import", str(tmp_path / "back.json"))
    assert code == 0, out
    assert json.loads(kpc(back, "nodes", "list", "--json")[1]) == json.loads(listed_lite)
    with SqliteStore(tmp_path / "back" / "machines.db") as store:
        assert store.list_bmcs()[0].macs == (MAC,)


def test_check_names_orphaned_keys(tmp_path: Path, etcd_auth: EtcdCluster) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}/"
    config = site(tmp_path, "s", etcd_state(etcd_auth, prefix))
    assert kpc(config, "state", "check")[0] == 0
    client = EtcdClient(etcd_auth.endpoints, user="kpc", password=PASSWORD)
    client.put(f"{prefix}bmc_macs/{OTHER}", "198.18.1.99")
    code, out = kpc(config, "state", "check")
    assert code != 0
    assert f"{prefix}bmc_macs/{OTHER}: orphaned (BMC 198.18.1.99" in out


def test_bad_credentials_are_clear_and_keep_secrets(tmp_path: Path, etcd_auth: EtcdCluster) -> None:
    config = site(tmp_path, "s", etcd_state(etcd_auth, f"t{uuid.uuid4().hex[:10]}/"))
    code, out = kpc(config, "nodes", "list", password="wrong-password-xyz")
    assert code != 0 and "authentication failed" in out, out
    assert "wrong-password-xyz" not in out and PASSWORD not in out
    noauth = site(tmp_path, "n", etcd_state(etcd_auth, "t0/", user=False))
    code, out = kpc(noauth, "nodes", "list")
    assert code != 0 and "refused" in out, out
