"""What an operator sees when things go wrong: no engine, a taken port, a missing image, a
crash-looping service. And `kpc down` keeps data unless --purge (after a confirmation)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.drivers.docker import START_HINT, translate
from appliance.errors import ConfigError
from appliance.images.build import write_ca_bundle
from tests.conftest import require_docker
from tests.services.conftest import TAG, docker_names, free_port, kpc, site, write_config


@pytest.fixture
def cleanup() -> Iterator[list[Path]]:
    """Configs whose containers are removed (down --purge --yes) after the test."""
    configs: list[Path] = []
    yield configs
    for config in configs:
        kpc(config, "down", "--purge", "--yes")


def test_engine_unreachable_says_how_to_start_it(tmp_path: Path) -> None:
    config = write_config(tmp_path / "kpc.yaml", site(tmp_path, f"{TAG}-nodocker"))
    socket_path = tmp_path / "no-dockerd.sock"
    env = {"DOCKER_HOST": f"unix://{socket_path}"}
    for args in (["status"], ["up"], ["down"], ["images", "build", "dnsmasq"], ["images", "base"]):
        result = kpc(config, *args, env=env)
        assert result.exit_code == 1, (args, result.output)
        assert f"error: cannot reach the Docker engine at unix://{socket_path}" in result.stderr
        assert "systemctl start docker" in result.stderr and "dockerd &" in result.stderr
        assert "DOCKER_HOST" in result.stderr
    assert "Traceback" not in result.output


def test_error_translation() -> None:
    port = translate(
        "docker: Error response from daemon: driver failed programming external connectivity "
        "on endpoint kpcb-registry (abc): Bind for 0.0.0.0:5000 failed: port is already "
        "allocated.",
        "starting container kpcb-registry",
        "unix:///var/run/docker.sock",
    )
    assert port.message == (
        "port 5000 on 0.0.0.0 is already in use (starting container kpcb-registry)"
    )
    missing = translate("Unable to find image 'kpcb/x:latest' locally", "starting x", "h")
    assert missing.hint == "build kpc's images first: kpc images build"
    down = translate("Cannot connect to the Docker daemon at unix:///x.sock.", "listing", "h")
    assert down.hint == START_HINT
    other = translate("something odd\n", "doing it", "h")
    assert other.message == "docker failed while doing it: something odd"


def test_port_taken_is_named(tmp_path: Path, cleanup: list[Path]) -> None:
    require_docker()
    prefix = f"{TAG}-port"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        data = site(tmp_path, prefix, registry={"address": "127.0.0.1", "port": port})
        config = write_config(tmp_path / "kpc.yaml", data)
        cleanup.append(config)
        result = kpc(config, "up", "registry")
    assert result.exit_code == 1, result.output
    assert (
        f"error: service registry cannot start: port {port} on 127.0.0.1 is already in use"
        in result.stderr
    )
    assert f"ss -ltnup 'sport = :{port}'" in result.stderr
    assert "or choose another registry.port in the site config" in result.stderr
    assert f"{prefix}-registry" not in docker_names()  # nothing half-made left behind


def test_missing_images_offer_the_build_command(tmp_path: Path) -> None:
    require_docker()
    data = site(tmp_path, f"{TAG}-noimg", images_prefix=f"{TAG}noimg")
    result = kpc(write_config(tmp_path / "kpc.yaml", data), "up")
    assert result.exit_code == 1
    assert (
        f"error: images not built yet: {TAG}noimg/registry:latest, {TAG}noimg/bootcfg:latest, "
        f"{TAG}noimg/dnsmasq:latest" in result.stderr
    )
    assert "hint: build them: kpc images build registry bootcfg dnsmasq" in result.stderr


def test_a_crash_looping_service_is_named_with_its_log(
    built_images: dict[str, Any], tmp_path: Path, cleanup: list[Path]
) -> None:
    del built_images
    prefix = f"{TAG}-crash"
    # bootcfg with os.version 'host' on a host that is not Flatcar and no Flatcar assets in
    # its data directory: it refuses to serve and exits; Docker keeps restarting it
    data = site(tmp_path, prefix, os={"version": "host"})
    config = write_config(tmp_path / "kpc.yaml", data)
    cleanup.append(config)
    result = kpc(config, "up", "bootcfg")
    assert result.exit_code == 1, result.output
    assert "error: service bootcfg is not healthy: it keeps crashing" in result.stderr
    assert "os.version is 'host', but this host is not Flatcar" in result.stderr  # its log
    assert "hint: see more with 'kpc logs bootcfg' and 'kpc status'" in result.stderr

    status = kpc(config, "status", "--json")
    assert status.exit_code == 0, status.output
    bootcfg = next(s for s in json.loads(status.stdout) if s["service"] == "bootcfg")
    assert bootcfg["problem"].startswith("it keeps crashing")
    assert bootcfg["restarts"] >= 1
    assert any("this host is not Flatcar" in line for line in bootcfg["log_tail"])
    table = kpc(config, "status")
    assert "bootcfg: it keeps crashing" in table.stdout
    assert "this host is not Flatcar" in table.stdout
    assert "registry  missing" in table.stdout


def test_dnsmasq_waits_for_a_missing_interface_and_says_so(
    built_images: dict[str, Any], tmp_path: Path, cleanup: list[Path]
) -> None:
    del built_images
    prefix = f"{TAG}-noif"
    # (127.0.0.5: a local address no dnsmasq socket is bound to, so TFTP there fails)
    data = site(
        tmp_path,
        prefix,
        interface=f"{TAG}noif0",
        address="127.0.0.5",
        services={"health_timeout": 3},
    )
    config = write_config(tmp_path / "kpc.yaml", data)
    cleanup.append(config)
    result = kpc(config, "up", "dnsmasq")
    assert result.exit_code == 1, result.output
    assert "error: service dnsmasq is not healthy: its health check has not passed yet, " \
        "after 3 s (services.health_timeout)" in result.stderr  # fmt: skip
    assert f"interface {TAG}noif0 does not currently exist" in result.stderr
    # it keeps running (and would serve once the interface appears), never crash-looping
    info = json.loads(
        subprocess.run(
            ["docker", "inspect", f"{prefix}-dnsmasq"], capture_output=True, text=True, check=True
        ).stdout
    )[0]
    assert info["State"]["Running"] and info["RestartCount"] == 0


def test_down_keeps_data_and_purge_asks_first(
    built_images: dict[str, Any], tmp_path: Path, cleanup: list[Path]
) -> None:
    del built_images
    prefix = f"{TAG}-down"
    data = site(tmp_path, prefix, registry={"address": "127.0.0.1", "port": free_port()})
    config = write_config(tmp_path / "kpc.yaml", data)
    cleanup.append(config)
    assert kpc(config, "up", "registry").exit_code == 0
    storage = Path(data["registry"]["storage"])
    marker = storage / "kpcb-marker"
    marker.write_text("kept\n")

    dry = kpc(config, "down", "--purge", "--dry-run")
    assert dry.exit_code == 0
    assert dry.stdout.splitlines() == [
        f"would remove container {prefix}-registry",
        f"would delete {storage}",
    ]
    assert f"{prefix}-registry" in docker_names()  # --dry-run changed nothing

    refused = kpc(config, "down", "--purge")  # no terminal, no --yes: nothing is deleted
    assert refused.exit_code == 3
    assert "error: nothing was removed" in refused.stderr
    assert marker.exists() and f"{prefix}-registry" in docker_names()

    kept = kpc(config, "down")
    assert kept.exit_code == 0, kept.output
    assert "down (data kept; --purge deletes it)" in kept.stdout
    assert marker.read_text() == "kept\n" and f"{prefix}-registry" not in docker_names()

    assert kpc(config, "up", "registry").exit_code == 0
    purged = kpc(config, "down", "--purge", input="y\n")
    assert purged.exit_code == 0, purged.output
    assert not storage.exists() and f"{prefix}-registry" not in docker_names()


def test_logs_of_a_service_that_is_not_there(tmp_path: Path) -> None:
    require_docker()
    config = write_config(tmp_path / "kpc.yaml", site(tmp_path, f"{TAG}-nologs"))
    result = kpc(config, "logs", "registry")
    assert result.exit_code == 1
    assert f"error: service registry has no container ({TAG}-nologs-registry)" in result.stderr
    assert "hint: start it: kpc up" in result.stderr


def test_a_secret_reaches_the_container_but_never_a_command_line(
    built_images: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cleanup: list[Path],
) -> None:
    """bootcfg.token from the environment: in the container's environment, in no docker argv."""
    del built_images
    real = shutil.which("docker")
    assert real is not None
    spy = tmp_path / "spy"
    spy.mkdir()
    argv_log = tmp_path / "argv.log"
    (spy / "docker").write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {argv_log}\nexec {real} "$@"\n')
    (spy / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{spy}:{os.environ['PATH']}")
    secret = "kpcb-s3cret-" + os.urandom(4).hex()
    prefix = f"{TAG}-secret"
    data = site(tmp_path, prefix, bootcfg={"token": {"env": "KPCB_TOKEN"}})
    config = write_config(tmp_path / "kpc.yaml", data)
    cleanup.append(config)
    result = kpc(config, "up", "bootcfg", env={"KPCB_TOKEN": secret})
    assert result.exit_code == 0, result.output
    assert argv_log.exists() and f"{prefix}-bootcfg" in argv_log.read_text()
    assert secret not in argv_log.read_text()
    assert secret not in result.output
    env = subprocess.run(
        ["docker", "inspect", "--format", "{{json .Config.Env}}", f"{prefix}-bootcfg"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert f"KPCB_TOKEN={secret}" in json.loads(env)
    missing = kpc(config, "up", "bootcfg", env={"KPCB_TOKEN": ""})
    assert missing.exit_code == 2
    assert "the secret in environment variable KPCB_TOKEN is not set" in missing.stderr


def test_ca_bundle_is_the_host_trust_plus_the_site_extra(tmp_path: Path) -> None:
    system = tmp_path / "system.pem"
    system.write_text("SYSTEM CAS\n")
    extra = tmp_path / "extra.pem"
    extra.write_text("SITE PROXY CA")
    bundle = write_ca_bundle(tmp_path / "out.pem", system, extra)
    assert bundle.read_text() == "SYSTEM CAS\nSITE PROXY CA\n"
    assert bundle.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match=r"images\.ca_bundle: cannot read"):
        write_ca_bundle(tmp_path / "o2.pem", system, tmp_path / "nope.pem")
    with pytest.raises(ConfigError, match="no CA bundle for builds"):
        write_ca_bundle(tmp_path / "o3.pem", tmp_path / "none.pem", None)
