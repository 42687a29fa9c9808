"""``kpc lab wait`` and ``kpc lab status`` ask each lab BMC for its server's power. A BMC
that does not answer in time is "no answer" (None), never an error that ends the wait: in
CI a simulated BMC answered late during a server's reset and the whole wait failed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.lab.up import bmc_power_state


def _fake_tool(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(0o755)


@pytest.fixture
def password(tmp_path: Path) -> Path:
    path = tmp_path / "bmc-password"
    path.write_text("secret\n")
    return path


@pytest.mark.parametrize("protocol,tool", [("ipmi", "ipmitool"), ("redfish", "curl")])
def test_a_bmc_that_answers_too_late_is_no_answer(
    tmp_path: Path, password: Path, monkeypatch: pytest.MonkeyPatch, protocol: str, tool: str
) -> None:
    _fake_tool(tmp_path / "bin", tool, "exec sleep 30")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert bmc_power_state("192.0.2.1", "admin", password, timeout=0.3, protocol=protocol) is None


def test_an_answer_in_time_is_read(
    tmp_path: Path, password: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_tool(tmp_path / "bin", "ipmitool", 'echo "Chassis Power is on"')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    assert bmc_power_state("192.0.2.1", "admin", password, timeout=5, protocol="ipmi") == "on"
