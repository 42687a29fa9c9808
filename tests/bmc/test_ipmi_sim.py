"""kpc against OpenIPMI's ipmi_sim: an independent BMC implementation."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

from typer.testing import CliRunner

from appliance.bmc import discovery
from appliance.cli.main import app
from tests.bmc.conftest import write_config
from tests.bmc.ipmisim import ipmi_sim

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
