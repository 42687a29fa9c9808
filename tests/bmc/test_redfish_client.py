"""kpc's Redfish client against sushy-tools' emulator (an implementation kpc did not write):
power, one-time PXE boot, inventory, certificate pinning, CA bundles, wrong credentials.
The emulators listen on loopback HTTPS ports; the password goes through the environment."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from appliance.cli.main import app
from appliance.state.model import Bmc
from appliance.state.sqlite import SqliteStore
from tests.bmc.conftest import Sims, write_config
from tests.bmc.redfish_peer import PASSWORD, USER, Emulator, make_cert, start_emulator
from tests.conftest import require_tool, wait_for

runner = CliRunner()
A, B = "127.44.20.1", "127.44.20.2"
PORT = 8443


@pytest.fixture
def emulators(tmp_path: Path) -> Iterator[list[Emulator]]:
    require_tool("openssl")
    started: list[Emulator] = []
    try:
        started.append(start_emulator(tmp_path / "a", A, PORT, macs=("52:54:00:aa:00:01",)))
        started.append(
            start_emulator(tmp_path / "b", B, PORT, macs=("52:54:00:bb:00:01", "52:54:00:bb:00:02"))
        )
        yield started
    finally:
        for emulator in started:
            emulator.stop()


def kpc(config: Path, *args: str, **env: str) -> tuple[int, str, str]:
    environ = {"KPC_BMC_PASSWORD": PASSWORD, "COLUMNS": "200", **env}
    result = runner.invoke(app, ["-c", str(config), *args], env=environ)
    return result.exit_code, result.stdout, result.stderr


def system_state(emulator: Emulator) -> dict[str, object]:
    """The emulator's own view of its system, read with curl (not kpc's client)."""
    url = f"https://{emulator.address}:{emulator.port}/redfish/v1/Systems/{emulator.system}"
    out = subprocess.run(
        ["curl", "-sk", "--fail", "-u", f"{USER}:{PASSWORD}", url],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return dict(json.loads(out))


def test_pxe_all_power_and_pinning(emulators: list[Emulator], tmp_path: Path) -> None:
    config = write_config(tmp_path, f"bmc: {{user: {USER}, protocol: redfish}}\n")
    targets = [f"{A}:{PORT}", f"{B}:{PORT}"]
    code, out, err = kpc(config, "pxe-all", *targets, "--yes", "--json")
    assert code == 0, err
    rows = {r["host"]: r for r in json.loads(out)}
    assert rows[A]["protocol"] == "redfish" and rows[A]["result"] == "PXE boot: powered on"
    assert rows[A]["done"] == ["set boot override Pxe (next boot)", "power on (On)"]
    for emulator in emulators:
        boot = system_state(emulator)
        assert boot["Boot"]["BootSourceOverrideTarget"] == "Pxe"  # type: ignore[index]
        # sushy-tools applies a power change 1-11 s later, like real hardware
        wait_for(lambda e=emulator: system_state(e)["PowerState"] == "On", 30, "power on")
    assert PASSWORD not in out + err
    # first use: each certificate pinned, and said so
    assert f"{A}: TLS certificate pinned on first use" in err
    with SqliteStore(tmp_path / "machines.db") as store:
        pins = {b.address: b.tls_fingerprint for b in store.list_bmcs()}
    assert pins == {A: emulators[0].fingerprint, B: emulators[1].fingerprint}

    code, out, err = kpc(config, "bmc", "power", "reset", *targets, "--yes", "--json")
    assert code == 0, err
    assert {r["result"] for r in json.loads(out)} == {"reset"}
    assert "pinned on first use" not in err  # already pinned: checked, not re-pinned


def test_changed_certificate_refused_per_host_until_forgotten(
    emulators: list[Emulator], tmp_path: Path
) -> None:
    config = write_config(tmp_path, f"bmc: {{user: {USER}, protocol: redfish}}\n")
    targets = [f"{A}:{PORT}", f"{B}:{PORT}"]
    assert kpc(config, "bmc", "power", "status", *targets)[0] == 0  # pins both
    emulators[0].stop()
    emulators[0] = start_emulator(tmp_path / "a2", A, PORT)  # same address, new certificate
    code, out, err = kpc(config, "bmc", "power", "status", *targets, "--json")
    assert code == 1
    rows = {r["host"]: r for r in json.loads(out)}
    assert rows[A]["failure"] == "certificate changed" and "nothing was sent" in rows[A]["error"]
    assert rows[B]["ok"] and rows[B]["result"] == "off"
    assert "kpc bmc forget-cert" in err
    code, _, err = kpc(config, "bmc", "forget-cert", A)
    assert code == 0, err
    code, out, err = kpc(config, "bmc", "power", "status", *targets, "--json")
    assert code == 0, err
    assert f"{A}: TLS certificate pinned on first use" in err
    code, _, err = kpc(config, "bmc", "forget-cert", "127.44.20.99")
    assert code != 0 and "no pinned certificate for 127.44.20.99" in err


def test_inventory_records_macs_and_the_mac_becomes_a_target(
    emulators: list[Emulator], tmp_path: Path
) -> None:
    config = write_config(tmp_path, f"bmc: {{user: {USER}, protocol: redfish}}\n")
    code, out, err = kpc(config, "bmc", "inventory", f"{A}:{PORT}", f"{B}:{PORT}", "--json")
    assert code == 0, err
    rows = {r["host"]: r for r in json.loads(out)}
    assert rows[B]["inventory"]["macs"] == ["52:54:00:bb:00:01", "52:54:00:bb:00:02"]
    assert rows[A]["inventory"]["uuid"] == emulators[0].system
    with SqliteStore(tmp_path / "machines.db") as store:
        bmcs = {b.address: b for b in store.list_bmcs()}
        assert bmcs[B].macs == ("52:54:00:bb:00:01", "52:54:00:bb:00:02")
        # a machine that PXE-boots later with that MAC is known with its BMC
        machine = store.record_request("52:54:00:bb:00:02", address=None, endpoint="ipxe", now=1)
    assert machine.bmc_address == B
    code, out, err = kpc(config, "pxe-all", "52:54:00:bb:00:02", "--dry-run", "--json")
    assert code == 0, err
    assert [r["host"] for r in json.loads(out)] == [B]


def test_wrong_password_is_reported_per_host(emulators: list[Emulator], tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        f"bmc: {{user: {USER}, protocol: redfish, hosts: [{{address: {B}, password: "
        "{env: OTHER_PW}}]}\n",
    )
    code, out, _err = kpc(
        config, "bmc", "power", "status", f"{A}:{PORT}", f"{B}:{PORT}", "--json", OTHER_PW="nope"
    )
    assert code == 1
    rows = {r["host"]: r for r in json.loads(out)}
    assert rows[A]["ok"]
    assert rows[B]["failure"] == "wrong credentials"


def test_ca_bundle_verifies_and_insecure_only_when_asked(tmp_path: Path) -> None:
    require_tool("openssl")
    ca_key, ca_crt = tmp_path / "ca.key", tmp_path / "ca.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
         "/CN=site-ca", "-keyout", str(ca_key), "-out", str(ca_crt)],
        check=True, capture_output=True,
    )  # fmt: skip
    key, csr, crt = tmp_path / "bmc.key", tmp_path / "bmc.csr", tmp_path / "bmc.crt"
    subprocess.run(
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=bmc", "-keyout",
         str(key), "-out", str(csr)], check=True, capture_output=True,
    )  # fmt: skip
    ext = tmp_path / "ext"
    ext.write_text(f"subjectAltName=IP:{A}\n")
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(crt)],
        check=True, capture_output=True,
    )  # fmt: skip
    emulator = start_emulator(tmp_path / "e", A, PORT, cert=(crt, key))
    try:
        config = write_config(tmp_path, f"bmc: {{user: {USER}, protocol: redfish}}\n")
        code, out, err = kpc(
            config, "bmc", "power", "status", f"{A}:{PORT}", "--ca-bundle", str(ca_crt)
        )
        assert code == 0, err
        assert "pinned" not in err  # a CA-verified BMC is not pinned
        other = tmp_path / "other-ca.crt"
        make_cert(tmp_path, "other-ca")
        code, out, err = kpc(
            config, "bmc", "power", "status", f"{A}:{PORT}", "--ca-bundle", str(other), "--json"
        )
        assert code == 1
        assert json.loads(out)[0]["failure"] == "TLS error"
        code, _, err = kpc(config, "bmc", "power", "status", f"{A}:{PORT}", "--insecure")
        assert code == 0, err
        assert "--insecure: Redfish certificates are not checked" in err
    finally:
        emulator.stop()


def test_a_mixed_fleet_in_one_run(emulators: list[Emulator], sims: Sims, tmp_path: Path) -> None:
    sims.start("127.44.21.10", 2, password=PASSWORD, user=USER, power="off")
    config = write_config(tmp_path, f"bmc: {{user: {USER}}}\n")  # protocol: auto
    with SqliteStore(tmp_path / "machines.db") as store:
        store.record_bmc(Bmc("127.44.21.10", protocols=("ipmi",)), 1.0)
        store.record_bmc(Bmc("127.44.21.11", protocols=("ipmi", "redfish")), 1.0)
        store.record_bmc(Bmc(A, protocols=("redfish",)), 1.0)
    targets = ["127.44.21.10", f"{A}:{PORT}"]
    code, out, err = kpc(config, "pxe-all", *targets, "--dry-run", "--json")
    assert code == 0, err
    assert [r["protocol"] for r in json.loads(out)] == ["ipmi", "redfish"]
    code, out, err = kpc(config, "pxe-all", *targets, "--yes", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [(r["protocol"], r["result"]) for r in rows] == [
        ("ipmi", "PXE boot: powered on"),
        ("redfish", "PXE boot: powered on"),
    ]
    # --protocol forces one for all: the IPMI-only simulator has no HTTPS service
    code, out, err = kpc(config, "bmc", "power", "status", "127.44.21.10", "--protocol",
                         "redfish", "--json", "--timeout", "2")  # fmt: skip
    assert code == 1
    assert json.loads(out)[0]["failure"] == "no answer"
