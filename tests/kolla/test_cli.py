"""`kpc kolla` on the command line, without running anything."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from appliance.cli.main import app

runner = CliRunner()


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "kpc.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "provisioning": {
                    "interface": "eth0",
                    "address": "10.0.0.1",
                    "subnet": "10.0.0.0/24",
                },
                "bootcfg": {"data_dir": str(tmp_path / "bootcfg")},
                "kolla": {"internal_vip": "10.0.0.250", "config_dir": str(tmp_path / "kolla")},
                "ssh": {"private_key": str(tmp_path / "id")},
                "paths": {"state_dir": str(tmp_path / "state"), "log_dir": str(tmp_path / "log")},
            }
        ),
        encoding="utf-8",
    )
    return path


def test_dry_run_prints_the_container_command(tmp_path: Path) -> None:
    cfg = config_file(tmp_path)
    result = runner.invoke(
        app, ["-c", str(cfg), "kolla", "deploy", "--dry-run", "--", "--tags", "nova"]
    )
    assert result.exit_code == 0, result.output
    line = result.stdout.strip()
    assert line.startswith("docker run --rm --init --name kpc-kolla --workdir /etc/kolla")
    assert f"--volume {tmp_path / 'kolla'}:/etc/kolla:rw" in line
    assert line.endswith(
        "kpc/kolla_deployer:latest kolla-ansible deploy --configdir /etc/kolla "
        "--inventory /etc/kolla/inventory --tags nova"
    )
    assert not (tmp_path / "log").exists()  # nothing ran


def test_destroy_asks_and_a_no_changes_nothing(tmp_path: Path) -> None:
    cfg = config_file(tmp_path)
    result = runner.invoke(app, ["-c", str(cfg), "kolla", "destroy"], input="n\n")
    assert result.exit_code == 3
    assert "This cannot be undone. Continue?" in result.output
    assert "kolla destroy cancelled; nothing was changed" in result.output
    assert not (tmp_path / "log").exists()


def test_destroy_dry_run_needs_no_confirmation(tmp_path: Path) -> None:
    cfg = config_file(tmp_path)
    result = runner.invoke(app, ["-c", str(cfg), "kolla", "destroy", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert (
        "kolla-ansible destroy --configdir /etc/kolla --inventory /etc/kolla/inventory "
        "--yes-i-really-really-mean-it" in result.stdout
    )


def test_genconfig_without_ready_machines(tmp_path: Path) -> None:
    cfg = config_file(tmp_path)
    result = runner.invoke(app, ["-c", str(cfg), "kolla", "genconfig"])
    assert result.exit_code == 2
    assert "no machine is ready for Kolla" in result.output
    assert not (tmp_path / "kolla" / "globals.yml").exists()


def test_running_a_step_before_genconfig(tmp_path: Path) -> None:
    cfg = config_file(tmp_path)
    result = runner.invoke(app, ["-c", str(cfg), "kolla", "prechecks", "--skip-checks"])
    assert result.exit_code == 2
    assert "no Kolla configuration in" in result.output
    assert "kpc kolla genconfig" in result.output
