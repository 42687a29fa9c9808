"""The registry on an etcd that requires TLS client certificates (``--client-cert-auth``):
kpc connects with the site's CA, certificate and key (a secret reference: a 0600 file, or
an environment variable loaded through an in-memory file), and is refused without them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from appliance.cli.main import app
from appliance.drivers.etcd import EtcdClient, EtcdError, EtcdUnavailable
from tests.conftest import REPO
from tests.state.etcd_cluster import EtcdCluster, make_certificates

MAC = "52:54:00:12:34:56"
runner = CliRunner()


@pytest.fixture(scope="module")
def etcd_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    root = tmp_path_factory.mktemp("etcdtls")
    cluster = EtcdCluster(root, index=3, size=1, tls=make_certificates(root / "pki"))
    cluster.start()
    try:
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop()


def kpc(tmp_path: Path, cluster: EtcdCluster, key: str, *args: str, **env: str) -> tuple[int, str]:
    assert cluster.tls is not None
    config = tmp_path / "kpc.yaml"
    config.write_text(
        "provisioning: {interface: eth0, address: 198.18.0.1, subnet: 198.18.0.0/24}\n"
        f"bootcfg: {{data_dir: {tmp_path / 'data'}}}\n"
        f"paths: {{source_dir: {REPO}}}\n"
        f"state: {{backend: etcd, etcd: {{endpoints: [{cluster.endpoints[0]}], "
        f"prefix: t{uuid.uuid4().hex[:8]}/, ca_file: {cluster.tls / 'ca.crt'}, "
        f"cert_file: {cluster.tls / 'client.crt'}, key: {key}}}}}\n"
    )
    result = runner.invoke(
        app, list(args), env={"HOME": str(tmp_path), "KPC_CONFIG": str(config), **env}
    )
    return result.exit_code, result.output


def test_client_certificate_from_a_file_or_the_environment(
    tmp_path: Path, etcd_tls: EtcdCluster
) -> None:
    assert etcd_tls.tls is not None
    key_file = etcd_tls.tls / "client.key"
    code, out = kpc(tmp_path, etcd_tls, f"{{file: {key_file}}}", "nodes", "list", "--json")
    assert code == 0 and json.loads(out) == [], out
    # the key in an environment variable: never written to disk, never on argv
    pem = key_file.read_text()
    code, out = kpc(
        tmp_path, etcd_tls, "{env: KPC_TEST_ETCD_KEY}", "nodes", "list", KPC_TEST_ETCD_KEY=pem
    )
    assert code == 0, out
    assert "PRIVATE KEY" not in out


def test_a_key_readable_by_others_or_no_certificate_is_refused(
    tmp_path: Path, etcd_tls: EtcdCluster
) -> None:
    assert etcd_tls.tls is not None
    loose = tmp_path / "loose.key"
    loose.write_text((etcd_tls.tls / "client.key").read_text())
    loose.chmod(0o644)
    code, out = kpc(tmp_path, etcd_tls, f"{{file: {loose}}}", "nodes", "list")
    assert code != 0 and "readable by group or others" in out, out
    assert "PRIVATE KEY" not in out
    # a key that is not the certificate's: named as a TLS set-up problem, not "no quorum"
    other = tmp_path / "other.key"
    other.write_text((etcd_tls.tls / "ca.key").read_text())
    other.chmod(0o600)
    code, out = kpc(tmp_path, etcd_tls, f"{{file: {other}}}", "nodes", "list")
    assert code != 0 and "cannot set up TLS for etcd" in out, out
    assert "PRIVATE KEY" not in out


def test_without_a_client_certificate_etcd_refuses_and_kpc_says_why(
    tmp_path: Path, etcd_tls: EtcdCluster
) -> None:
    assert etcd_tls.tls is not None
    client = EtcdClient(etcd_tls.endpoints, ca_file=str(etcd_tls.tls / "ca.crt"))
    with pytest.raises(EtcdError) as refused:
        client.range("t/")
    assert not isinstance(refused.value, EtcdUnavailable)
    assert "TLS failed" in str(refused.value)
