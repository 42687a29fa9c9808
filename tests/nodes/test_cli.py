"""`kpc nodes check|forget-hostkey|exec|ssh` end to end: real sshd, real registry, real CLI."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from appliance.cli.main import app
from appliance.state.model import Machine
from appliance.state.sqlite import SqliteStore
from tests.conftest import REPO, require_docker, require_root, require_tool
from tests.nodes.conftest import mac_for
from tests.nodes.sshd import PORT, SshdFarm, keygen, path_without, silent_listener

runner = CliRunner()
NO_AGENT = {"SSH_AUTH_SOCK": None}


def write_config(
    tmp_path: Path, key: Path, store: SqliteStore, *, timeout: float = 3, extra: str = ""
) -> Path:
    config = tmp_path / "kpc.yaml"
    config.write_text(
        f"""\
provisioning: {{interface: kpcf0, address: 198.18.7.1, subnet: 198.18.7.0/24}}
bootcfg: {{state_db: {tmp_path / "machines.db"}}}
paths: {{state_dir: {tmp_path / "state"}}}
ssh: {{user: root, private_key: {key}, port: {PORT}, timeout: {timeout}}}
{extra}"""
    )
    return config


def kpc(config: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["-c", str(config), *args], env=NO_AGENT)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def config(tmp_path: Path, client_keys: dict[str, Path], store: SqliteStore) -> Path:
    return write_config(tmp_path, client_keys["good"], store)


def test_check_good_node_table_and_json(
    farm: SshdFarm,
    client_keys: dict[str, Path],
    store: SqliteStore,
    ready: Callable[..., Machine],
    config: Path,
) -> None:
    require_docker()
    server = farm.start("127.0.7.121", [client_keys["good"]])
    ready(store, mac_for(1), server.address, "good-1")
    code, out, err = kpc(config, "nodes", "check", "--min-free-gib", "0.01")
    assert code == 0, out + err
    assert "good-1" in out and "127.0.7.121" in out
    assert "(new)" in out  # first use: the key was recorded
    assert "1 of 1 nodes fit" in out
    recorded = store.get(mac_for(1))
    assert recorded is not None and recorded.ssh_host_key == server.host_key_line

    code, out, err = kpc(config, "nodes", "check", "--json", "--min-free-gib", "0.01")
    assert code == 0, err
    data = json.loads(out)
    assert data["fit"] is True and data["unfit"] == []
    (node,) = data["nodes"]
    assert node["mac"] == mac_for(1) and node["reachable"] is True
    assert node["host_key"]["status"] == "matched"
    assert node["checks"]["docker"]["running"] is True
    assert node["checks"]["os"]["status"] == "ok"
    assert node["checks"]["python"]["version"].startswith("3.")
    assert abs(node["checks"]["clock"]["offset_s"]) < 1
    assert node["checks"]["disk"]["free_bytes"] > 0


def test_check_failures_each_with_its_reason(
    farm: SshdFarm,
    client_keys: dict[str, Path],
    store: SqliteStore,
    ready: Callable[..., Machine],
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, client_keys["good"], store, timeout=1)
    no_docker = path_without(tmp_path, {"docker"})
    farm.start("127.0.7.131", [client_keys["good"]], path=no_docker)
    farm.start("127.0.7.132", [client_keys["wrong"]])  # our key is not authorised there
    listener = silent_listener("127.0.7.134")  # accepts, never speaks
    try:
        ready(store, mac_for(0x31), "127.0.7.131", "no-docker")
        ready(store, mac_for(0x32), "127.0.7.132", "wrong-key")
        ready(store, mac_for(0x33), "127.0.7.133", "refuses")  # nothing listens
        ready(store, mac_for(0x34), "127.0.7.134", "hangs")
        code, out, err = kpc(config, "nodes", "check", "--json", "--min-free-gib", "0.01")
    finally:
        listener.close()
    assert code == 1
    data = json.loads(out)
    assert data["fit"] is False
    nodes = {n["name"]: n for n in data["nodes"]}
    assert set(nodes) == {"no-docker", "wrong-key", "refuses", "hangs"}
    docker = nodes["no-docker"]
    assert docker["reachable"] is True
    assert docker["checks"]["docker"]["status"] == "fail"
    assert docker["checks"]["docker"]["installed"] is False
    assert docker["reason"].startswith("check failed: docker: docker is not installed")
    assert nodes["wrong-key"]["failure"]["kind"] == "auth failed"
    assert nodes["wrong-key"]["host_key"]["status"] == "not recorded"
    assert nodes["refuses"]["failure"]["kind"] == "refused"
    assert nodes["hangs"]["failure"]["kind"] == "timeout"
    # the error block names every unfit node and why
    assert "4 of 4 nodes not fit" in err
    assert "wrong-key (52:54:00:07:00:32): auth failed" in err
    # only the node kpc logged in to had its key recorded
    keys = {m.mac: m.ssh_host_key for m in store.machines()}
    assert keys[mac_for(0x31)] is not None
    assert keys[mac_for(0x32)] is None


def test_docker_check_can_be_optional(
    farm: SshdFarm,
    client_keys: dict[str, Path],
    store: SqliteStore,
    ready: Callable[..., Machine],
    config: Path,
    tmp_path: Path,
) -> None:
    farm.start("127.0.7.135", [client_keys["good"]], path=path_without(tmp_path, {"docker"}))
    ready(store, mac_for(0x35), "127.0.7.135", "no-docker")
    args = ["nodes", "check", "--min-free-gib", "0.01", "--optional", "docker"]
    code, out, err = kpc(config, *args)
    assert code == 0, out + err
    assert "! no-docker (52:54:00:07:00:35): docker: docker is not installed" in out


def test_changed_host_key_until_forgotten(
    farm: SshdFarm,
    client_keys: dict[str, Path],
    store: SqliteStore,
    ready: Callable[..., Machine],
    config: Path,
    tmp_path: Path,
) -> None:
    first = farm.start("127.0.7.141", [client_keys["good"]])
    mac = mac_for(0x41)
    ready(store, mac, first.address, "rebuilt")
    args = ["nodes", "check", mac, "--optional", "docker", "--min-free-gib", "0.01"]
    code, out, err = kpc(config, *args)
    assert code == 0, out + err
    farm.stop(first)
    # the node comes back with new host keys, reinstalled behind kpc's back
    second = farm.start(first.address, [client_keys["good"]], host_key=keygen(tmp_path / "new"))

    code, out, err = kpc(config, *args)
    assert code == 1
    assert "CHANGED" in out
    assert "host key changed" in err and "HOST KEY CHANGED" in err
    assert f"kpc nodes forget-hostkey {mac}" in out
    assert store.get(mac).ssh_host_key == first.host_key_line  # type: ignore[union-attr]
    code, out, err = kpc(config, *args)  # still refused: no silent re-trust
    assert code == 1

    code, out, err = kpc(config, "nodes", "forget-hostkey", mac.upper())
    assert code == 0, err
    assert "forgot the host key of" in out
    code, out, err = kpc(config, *args)
    assert code == 0, out + err
    assert store.get(mac).ssh_host_key == second.host_key_line  # type: ignore[union-attr]


def test_bad_input_is_refused_clearly(
    store: SqliteStore, config: Path, ready: Callable[..., Machine]
) -> None:
    code, _, err = kpc(config, "nodes", "check")
    assert code == 1
    assert "no machine is ready" in err
    code, _, err = kpc(config, "nodes", "check", "not-a-mac")
    assert code == 2 and "not a MAC address: not-a-mac" in err
    code, _, err = kpc(config, "nodes", "check", "52:54:00:07:ff:ff")
    assert code == 2 and "no machine with MAC 52:54:00:07:ff:ff" in err
    code, _, err = kpc(config, "nodes", "forget-hostkey", "52:54:00:07:ff:ff")
    assert code == 1 and "no machine with MAC" in err
    ready(store, mac_for(0x50), "127.0.7.150")
    code, _, err = kpc(config, "nodes", "exec", "--only", "nothing*", "--", "true")
    assert code == 2 and "matches none of the 1 selected machines" in err


def test_keys_default_to_home_like_ssh(
    farm: SshdFarm,
    client_keys: dict[str, Path],
    tmp_path: Path,
    store: SqliteStore,
    ready: Callable[..., Machine],
) -> None:
    config = tmp_path / "kpc.yaml"
    config.write_text(
        f"provisioning: {{interface: kpcf0, address: 198.18.7.1, subnet: 198.18.7.0/24}}\n"
        f"bootcfg: {{state_db: {tmp_path / 'machines.db'}}}\n"
        f"ssh: {{user: root, port: {PORT}}}\n"
    )
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    env = {"SSH_AUTH_SOCK": None, "HOME": str(home)}
    args = ["-c", str(config), "nodes", "exec", "--", "true"]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 2
    assert "no SSH key to log in to the nodes with" in result.stderr
    assert "hint:" in result.stderr

    server = farm.start("127.0.7.151", [client_keys["good"]])
    ready(store, mac_for(0x51), server.address, "home-key")
    for suffix in ("", ".pub"):
        (home / ".ssh" / f"id_ed25519{suffix}").write_bytes(
            Path(f"{client_keys['good']}{suffix}").read_bytes()
        )
    (home / ".ssh" / "id_ed25519").chmod(0o600)
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.stderr
    assert "1 of 1 nodes succeeded" in result.stderr


def test_exec_streams_with_prefix_and_fails_if_any_node_fails(
    farm: SshdFarm,
    client_keys: dict[str, Path],
    store: SqliteStore,
    ready: Callable[..., Machine],
    config: Path,
) -> None:
    for i in (1, 2):
        server = farm.start(f"127.0.7.16{i}", [client_keys["good"]])
        ready(store, mac_for(0x60 + i), server.address, f"exec-{i}")
    ready(store, mac_for(0x63), "127.0.7.163", "exec-down")  # refuses
    code, out, err = kpc(config, "nodes", "exec", "--", "echo", "hello;", "hostname", ">&2")
    assert code == 1
    assert "exec-1    | hello" in out and "exec-2    | hello" in out
    assert "2 of 3 nodes succeeded" in err
    assert "exec-down (52:54:00:07:00:63): refused" in err

    code, out, err = kpc(config, "nodes", "exec", "--only", "exec-[12]", "--", "exit 0")
    assert code == 0, err
    assert "2 of 2 nodes succeeded" in err

    code, out, err = kpc(
        config, "nodes", "exec", "--only", "exec-?", "--collect", "--", "echo out-$((1+1)); exit 4"
    )
    assert code == 1
    assert "=== exec-1 (52:54:00:07:00:61): exit status 4 ===" in out
    assert out.count("out-2") == 2
    assert "the command failed on 2 of 2 nodes" in err
    # exec records first-use keys like check does
    assert store.get(mac_for(0x61)).ssh_host_key is not None  # type: ignore[union-attr]


def test_exec_timeout(
    farm: SshdFarm,
    client_keys: dict[str, Path],
    store: SqliteStore,
    ready: Callable[..., Machine],
    config: Path,
) -> None:
    server = farm.start("127.0.7.171", [client_keys["good"]])
    ready(store, mac_for(0x71), server.address, "slow")
    # a command that ends by itself (SIGPIPE) once kpc has hung up, so nothing outlives the test
    # (5 s: the login shell must have started and printed before the timeout, on a busy box)
    loop = "while :; do echo tick; sleep 0.1; done"
    code, out, err = kpc(config, "nodes", "exec", "--timeout", "5", "--", loop)
    assert code == 1
    assert "slow | tick" in out, (out, err)
    assert "slow (52:54:00:07:00:71): timeout: 127.0.7.171:2222: command did not finish" in err


def test_ssh_runs_system_ssh_with_strict_host_keys(
    farm: SshdFarm,
    client_keys: dict[str, Path],
    store: SqliteStore,
    ready: Callable[..., Machine],
    config: Path,
    tmp_path: Path,
) -> None:
    require_tool("ssh")
    server = farm.start("127.0.7.181", [client_keys["good"]])
    mac = mac_for(0x81)
    ready(store, mac, server.address, "shell")
    kpc_bin = REPO / ".venv" / "bin" / "kpc"
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    argv = [str(kpc_bin), "-c", str(config), "nodes", "ssh", mac, "--", "echo", "via-ssh"]
    first = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().endswith("via-ssh")
    assert "recorded the host key of shell" in first.stderr
    known = (tmp_path / "state" / "ssh" / "known_hosts").read_text()
    assert f"[{server.address}]:{PORT} {server.host_key_line} kpc:{mac}" in known

    # a different key at the same address: OpenSSH itself refuses, strictly
    farm.stop(server)
    farm.start(server.address, [client_keys["good"]], host_key=keygen(tmp_path / "other"))
    second = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert second.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in second.stderr
    assert "via-ssh" not in second.stdout


def test_lab_like_node_dropbear_busybox(
    farm: SshdFarm,
    client_keys: dict[str, Path],
    store: SqliteStore,
    ready: Callable[..., Machine],
    config: Path,
) -> None:
    """The virtual lab's nodes run dropbear on a busybox userland: kpc logs in, reports what
    is missing as failed checks, and does not crash on busybox's df and date."""
    require_root()
    require_tool("dropbear", "dropbearkey", "unshare", "busybox")
    server = farm.start_lab_like("127.0.7.191", [client_keys["good"]])
    mac = mac_for(0x91)
    ready(store, mac, server.address, "lab-node")
    code, out, err = kpc(config, "nodes", "check", "--json", "--min-free-gib", "0.01")
    assert code == 1
    (node,) = json.loads(out)["nodes"]
    assert node["reachable"] is True
    checks = node["checks"]
    assert checks["docker"]["status"] == "fail" and checks["docker"]["installed"] is False
    assert checks["python"]["status"] == "fail" and checks["python"]["summary"] == "absent"
    assert checks["disk"]["status"] == "ok"  # busybox df -Pk parsed
    assert checks["clock"]["status"] == "ok"  # busybox date: whole seconds, wider margin
    assert checks["clock"]["uncertainty_s"] >= 0.5
    assert store.get(mac).ssh_host_key == server.host_key_line  # type: ignore[union-attr]

    code, out, err = kpc(config, "nodes", "exec", "--", "busybox | head -1")
    assert code == 0, err
    assert "lab-node | BusyBox" in out
