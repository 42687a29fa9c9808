"""kpc against OpenIPMI's ipmi_sim, an independent BMC implementation: discovery, power,
boot device and pxe-all."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from appliance.bmc import discovery
from appliance.cli.main import app
from tests.bmc.conftest import write_config
from tests.bmc.ipmisim import ipmi_sim
from tests.conftest import require_tool

runner = CliRunner()
ADDRESS = "127.44.9.1"
PASSWORD = "OpenIPMI-pw_51"


def test_discovery_and_power_against_ipmi_sim(tmp_path: Path) -> None:
    with ipmi_sim(tmp_path / "ipmisim", ADDRESS, "admin", PASSWORD) as power_file:
        result = discovery.run_sweep(
            [ipaddress.IPv4Network("127.44.9.0/29")], discovery.SweepOptions(rate=0, timeout=0.5)
        )
        assert [f.address for f in result.found] == [ADDRESS]
        found = result.found[0]
        assert found.auth is not None and found.auth.completion_code == 0
        assert "2.0" in found.ipmi_versions and "1.5" in found.ipmi_versions
        assert {"md5", "password", "rmcp+"} <= set(found.auth_types)

        config = write_config(tmp_path, f"bmc: {{user: admin, hosts: [{{address: {ADDRESS}}}]}}\n")
        env = {"KPC_BMC_PASSWORD": PASSWORD}

        def kpc(*args: str) -> dict[str, object]:
            out = runner.invoke(app, ["-c", str(config), "bmc", "power", *args, "--json"], env=env)
            assert out.exit_code == 0, out.output
            rows = json.loads(out.stdout)
            assert len(rows) == 1
            return dict(rows[0])

        assert kpc("status")["result"] == "off"
        assert kpc("on", "--yes")["result"] == "powered on"
        assert power_file.read_text() == "1"  # ipmi_sim ran its chassis program
        assert kpc("status")["result"] == "on"
        assert kpc("off", "--yes")["result"] == "powered off"
        assert power_file.read_text() == "0"
        assert kpc("status")["result"] == "off"

        wrong = runner.invoke(
            app,
            ["-c", str(config), "bmc", "power", "status", "--json", "--timeout", "5"],
            env={"KPC_BMC_PASSWORD": "not-it"},
        )
        assert wrong.exit_code == 1
        assert json.loads(wrong.stdout)[0]["failure"] == "wrong credentials"


def test_bootdev_and_pxe_all_against_ipmi_sim(tmp_path: Path) -> None:
    require_tool("ipmitool")
    with ipmi_sim(tmp_path / "ipmisim", ADDRESS, "admin", PASSWORD) as power_file:
        config = write_config(tmp_path, f"bmc: {{user: admin, hosts: [{{address: {ADDRESS}}}]}}\n")
        env = {"KPC_BMC_PASSWORD": PASSWORD}

        def kpc(*args: str) -> dict[str, object]:
            out = runner.invoke(app, ["-c", str(config), *args, "--yes", "--json"], env=env)
            assert out.exit_code == 0, out.output
            (row,) = json.loads(out.stdout)
            return dict(row)

        def boot_device() -> str:
            """What ipmi_sim itself stored, read back with ipmitool (not kpc)."""
            out = subprocess.run(
                ["ipmitool", "-I", "lanplus", "-H", ADDRESS, "-U", "admin", "-E", "chassis",
                 "bootparam", "get", "5"],
                env={**os.environ, "IPMITOOL_PASSWORD": PASSWORD}, capture_output=True,
                text=True, check=False,
            ).stdout  # fmt: skip
            return next(
                line.split(":", 1)[1].strip() for line in out.splitlines() if "Selector" in line
            )

        assert kpc("bmc", "bootdev", "disk")["result"] == "boot device disk (next boot)"
        assert boot_device() == "Force Boot from default Hard-Drive"
        assert kpc("bmc", "bootdev", "pxe")["result"] == "boot device pxe (next boot)"
        assert boot_device() == "Force PXE"
        assert (power_file.parent / "boot").read_text() == "pxe"  # its chassis program was told

        kpc("bmc", "bootdev", "disk")
        assert kpc("pxe-all")["result"] == "PXE boot: powered on"  # it was off
        assert power_file.read_text() == "1"
        assert boot_device() == "Force PXE"
        kpc("bmc", "bootdev", "disk")
        row = kpc("pxe-all")
        assert row["result"] == "PXE boot: reset"  # now on
        assert row["done"] == ["set boot device pxe (next boot)", "reset"]
        assert boot_device() == "Force PXE"
