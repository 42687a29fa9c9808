"""The SSH driver against real OpenSSH servers on loopback: every failure gets its kind."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.drivers.ssh import (
    Credentials,
    HostKey,
    SshError,
    SshFailure,
    connect,
    load_private_key,
)
from appliance.errors import ConfigError
from tests.conftest import require_tool, wait_for
from tests.nodes.sshd import PORT, SshdFarm, keygen, public_line, silent_listener


def creds(key: Path) -> Credentials:
    return Credentials("root", (load_private_key(key),))


def test_host_key_fingerprint_matches_ssh_keygen(client_keys: dict[str, Path]) -> None:
    key = HostKey.parse(public_line(client_keys["good"]))
    out = subprocess.run(
        ["ssh-keygen", "-lf", f"{client_keys['good']}.pub"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert key.fingerprint == out.split()[1]
    assert key.line == public_line(client_keys["good"])
    assert load_private_key(client_keys["good"]).fingerprint == key.fingerprint


def test_good_key_logs_in_and_runs_commands(farm: SshdFarm, client_keys: dict[str, Path]) -> None:
    server = farm.start("127.0.7.101", [client_keys["good"]])
    lines: list[tuple[str, str]] = []
    with connect(
        server.address, PORT, creds(client_keys["good"]), known_host_key=None, timeout=3
    ) as session:
        assert session.host_key.line == server.host_key_line
        result = session.run(
            "echo one; echo two >&2; printf 'no newline'; exit 3",
            timeout=20,
            on_output=lambda stream, line: lines.append((stream, line)),
        )
        piped = session.run("tr a-z A-Z", timeout=20, stdin=b"shout\n")
    assert result.exit_status == 3
    assert result.stdout.endswith("one\nno newline")
    assert ("stdout", "one") in lines
    assert ("stdout", "no newline") in lines
    assert ("stderr", "two") in lines
    assert piped.stdout.strip().endswith("SHOUT")


def test_recorded_key_matches(farm: SshdFarm, client_keys: dict[str, Path]) -> None:
    server = farm.start("127.0.7.102", [client_keys["good"]])
    known = HostKey.parse(server.host_key_line)
    with connect(
        server.address, PORT, creds(client_keys["good"]), known_host_key=known, timeout=3
    ) as session:
        assert session.host_key == known


def test_wrong_key_is_auth_failed(farm: SshdFarm, client_keys: dict[str, Path]) -> None:
    server = farm.start("127.0.7.103", [client_keys["good"]])
    with pytest.raises(SshError) as caught:
        connect(server.address, PORT, creds(client_keys["wrong"]), known_host_key=None, timeout=3)
    assert caught.value.kind is SshFailure.AUTH_FAILED
    assert "root refused every key offered" in caught.value.message
    assert load_private_key(client_keys["wrong"]).fingerprint in caught.value.message
    # the key exchange happened: the report can still show the node's key
    assert caught.value.host_key == HostKey.parse(server.host_key_line)


def test_closed_port_is_refused(client_keys: dict[str, Path]) -> None:
    with pytest.raises(SshError) as caught:
        connect("127.0.7.104", PORT, creds(client_keys["good"]), known_host_key=None, timeout=3)
    assert caught.value.kind is SshFailure.REFUSED
    assert "127.0.7.104:2222: connection refused" in caught.value.message


def test_silent_server_is_a_timeout(client_keys: dict[str, Path]) -> None:
    listener = silent_listener("127.0.7.105")
    try:
        with pytest.raises(SshError) as caught:
            connect("127.0.7.105", PORT, creds(client_keys["good"]), known_host_key=None, timeout=1)
        # kpc gave up and hung up: the connection it left in the queue is closed by it
        conn, _ = listener.accept()
        conn.settimeout(30)
        with conn:
            received = b""
            while chunk := conn.recv(4096):
                received += chunk
    finally:
        listener.close()
    assert caught.value.kind is SshFailure.TIMEOUT
    assert "within 1s" in caught.value.message
    assert received.startswith(b"SSH-2.0-")  # it had sent its banner, then closed


def test_changed_host_key_stops_before_login(
    farm: SshdFarm, client_keys: dict[str, Path], tmp_path: Path
) -> None:
    server = farm.start("127.0.7.106", [client_keys["good"]])
    old = HostKey.parse(public_line(keygen(tmp_path / "old_host_key")))
    with pytest.raises(SshError) as caught:
        connect(server.address, PORT, creds(client_keys["good"]), known_host_key=old, timeout=3)
    error = caught.value
    assert error.kind is SshFailure.HOST_KEY_CHANGED
    assert "HOST KEY CHANGED" in error.message
    assert old.fingerprint in error.message
    assert error.host_key == HostKey.parse(server.host_key_line)
    assert error.hint is not None and "forget-hostkey" in error.hint
    # kpc never offered a key to the impostor
    assert "Accepted publickey" not in server.log.read_text()


def test_recorded_key_type_no_longer_offered_is_a_change(
    farm: SshdFarm, client_keys: dict[str, Path], tmp_path: Path
) -> None:
    server = farm.start("127.0.7.107", [client_keys["good"]])  # offers ed25519 only
    recorded = HostKey.parse(public_line(keygen(tmp_path / "rsa_host", "rsa")))
    with pytest.raises(SshError) as caught:
        connect(
            server.address, PORT, creds(client_keys["good"]), known_host_key=recorded, timeout=3
        )
    assert caught.value.kind is SshFailure.HOST_KEY_CHANGED
    assert "no longer offers a ssh-rsa host key" in caught.value.message


def test_rsa_host_key_recorded_and_matched(
    farm: SshdFarm, client_keys: dict[str, Path], tmp_path: Path
) -> None:
    host = keygen(tmp_path / "rsa_host", "rsa")
    server = farm.start("127.0.7.108", [client_keys["good"]], host_key=host)
    with connect(
        server.address, PORT, creds(client_keys["good"]), known_host_key=None, timeout=3
    ) as first:
        assert first.host_key.type == "ssh-rsa"
        seen = first.host_key
    with connect(
        server.address, PORT, creds(client_keys["good"]), known_host_key=seen, timeout=3
    ) as again:
        assert again.host_key == seen


def test_command_timeout(farm: SshdFarm, client_keys: dict[str, Path]) -> None:
    server = farm.start("127.0.7.109", [client_keys["good"]])
    with (
        connect(
            server.address, PORT, creds(client_keys["good"]), known_host_key=None, timeout=3
        ) as session,
        pytest.raises(SshError) as caught,
    ):
        session.run("while :; do echo tick; sleep 0.1; done", timeout=0.5)
    assert caught.value.kind is SshFailure.TIMEOUT
    assert "did not finish within 0.5s" in caught.value.message


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[str]:
    """A real ssh-agent, a child of the test, on a socket in tmp."""
    require_tool("ssh-agent", "ssh-add")
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        wait_for(sock.exists, 10, "ssh-agent socket")
        yield str(sock)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_agent_keys_log_in(farm: SshdFarm, client_keys: dict[str, Path], agent: str) -> None:
    server = farm.start("127.0.7.110", [client_keys["good"]])
    subprocess.run(
        ["ssh-add", str(client_keys["good"])],
        env={"SSH_AUTH_SOCK": agent},
        check=True,
        capture_output=True,
    )
    # the configured key file is wrong; the agent's key gets in
    both = Credentials("root", (load_private_key(client_keys["wrong"]),), agent_socket=agent)
    with connect(server.address, PORT, both, known_host_key=None, timeout=3) as session:
        assert session.run("echo via-agent", timeout=20).stdout.strip().endswith("via-agent")


def test_no_key_at_all_is_auth_failed(farm: SshdFarm, client_keys: dict[str, Path]) -> None:
    server = farm.start("127.0.7.111", [client_keys["good"]])
    nothing = Credentials("root", (), agent_socket="/nonexistent/agent.sock")
    with pytest.raises(SshError) as caught:
        connect(server.address, PORT, nothing, known_host_key=None, timeout=3)
    assert caught.value.kind is SshFailure.AUTH_FAILED
    assert "no key to log in with" in caught.value.message


def test_unusable_private_key_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_private_key(tmp_path / "missing")
    (tmp_path / "junk").write_text("not a key\n")
    with pytest.raises(ConfigError, match="not a usable private key"):
        load_private_key(tmp_path / "junk")
    require_tool("ssh-keygen")
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(tmp_path / "locked")],
        check=True,
    )
    with pytest.raises(ConfigError, match="passphrase") as caught:
        load_private_key(tmp_path / "locked")
    assert caught.value.hint is not None and "ssh-add" in caught.value.hint
