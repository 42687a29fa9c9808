"""Bad input files and options: one clear error (file, field, what to do), never a
traceback, never a hang. Each case runs the real ``kpc`` in a subprocess with a deadline."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.bootcfg.catalog import TemplateKind, load_template
from appliance.errors import ConfigError
from appliance.inputfile import check_yaml_shape, read_yaml

SITE = """\
provisioning: {interface: eth1, address: 198.18.0.2, subnet: 198.18.0.0/24}
os: {version: 3975.2.0}
"""
ALIAS_BOMB = "".join(
    [f"a: &a [{', '.join(['lol'] * 9)}]\n"]
    + [
        f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n"
        for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    ]
)


def kpc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        capture_output=True,
        text=True,
        timeout=60,  # a hang fails the test here
        stdin=subprocess.DEVNULL,
        env={**os.environ, "KPC_CONFIG": "", **(env or {})},
        check=False,
    )


def refused(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Exit 2, no traceback, and ``expected`` in the first error line."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    for text in expected:
        assert text in result.stderr, result.stderr
    return result.stderr


def test_a_config_that_is_not_utf8(tmp_path: Path) -> None:
    config = tmp_path / "kpc.yaml"
    config.write_bytes(SITE.encode() + b"bmc: {user: r\xe9mi}\n")
    refused(
        kpc("--config", str(config), "config", "validate"),
        f"{config}:3: the site config is not UTF-8 text (byte 0xe9 at column 14)",
        "hint: save it as UTF-8",
    )


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/dev/zero", "a character device"), ("DIR", "a directory"), ("FIFO", "a named pipe (FIFO)")],
)
def test_a_config_that_is_not_a_regular_file(tmp_path: Path, path: str, kind: str) -> None:
    if path == "DIR":
        path = str(tmp_path)
    elif path == "FIFO":
        os.mkfifo(tmp_path / "fifo")  # nobody writes: reading it would block forever
        path = str(tmp_path / "fifo")
    refused(kpc("--config", path, "config", "validate"), f"{path}: is {kind}, not a file")


def test_a_config_too_large(tmp_path: Path) -> None:
    config = tmp_path / "kpc.yaml"
    config.write_text(SITE + "#" * (3 * 1024 * 1024) + "\n")
    refused(
        kpc("--config", str(config), "config", "validate"),
        f"{config}: is 3.0 MiB; a site config is at most 1.0 MiB",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", ":3: nested more than 64 levels deep"),
        (ALIAS_BOMB, ":8: expands to more than 200000 values"),
    ],
    ids=["deep", "alias-bomb"],
)
def test_yaml_shapes_that_would_exhaust_kpc(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "kpc.yaml"
    config.write_text(SITE + text)
    refused(kpc("--config", str(config), "config", "validate"), f"{config}{expected}")


@pytest.mark.parametrize("kind", ["not-utf8", "directory", "fifo"])
def test_a_secret_file_that_cannot_be_a_secret(tmp_path: Path, kind: str) -> None:
    secret = tmp_path / "bmc-password"
    if kind == "not-utf8":
        secret.write_bytes(b"pa\xffss\n")
        secret.chmod(0o600)
        expected = f"bmc.password: {secret}:1: the secret file is not UTF-8 text"
    elif kind == "directory":
        secret.mkdir(mode=0o700)
        expected = f"bmc.password: {secret}: is a directory, not a file"
    else:
        os.mkfifo(secret, 0o600)
        expected = f"bmc.password: {secret}: is a named pipe (FIFO), not a file"
    config = tmp_path / "kpc.yaml"
    config.write_text(SITE + f"bmc: {{password: {{file: {secret}}}}}\n")
    refused(kpc("--config", str(config), "config", "validate"), expected)


@pytest.mark.parametrize("name", ["Sup3rS3cretPassw0rd", "hunter2!"])
def test_a_secret_written_where_its_variable_name_goes_is_not_repeated(
    tmp_path: Path, name: str
) -> None:
    config = tmp_path / "kpc.yaml"
    config.write_text(SITE + f"bmc: {{password: {{env: '{name}'}}}}\n")
    result = kpc("--config", str(config), "config", "validate")
    err = refused(result, f"{config}:3: bmc.password.env: expected the name of an environment")
    assert name not in err + result.stdout


@pytest.fixture
def site(tmp_path: Path) -> Path:
    config = tmp_path / "kpc.yaml"
    data = tmp_path / "data"
    config.write_text(SITE + f"bootcfg: {{data_dir: {data}, state_db: {tmp_path / 'm.db'}}}\n")
    return config


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--port", "99999"], "Invalid value for '--port'"),
        (["--port", "0"], "Invalid value for '--port'"),
        (["--listen", "not-an-ip"], "'not-an-ip' is not an IP address"),
    ],
)
def test_serve_options_checked_before_anything_starts(
    site: Path, args: list[str], expected: str
) -> None:
    result = kpc("--config", str(site), "bootcfg", "serve", *args)
    refused(result, expected)
    assert "serving" not in result.stderr


def test_serve_on_a_port_in_use_is_one_error(site: Path, tmp_path: Path) -> None:
    init = kpc("--config", str(site), "bootcfg", "init", "--ssh-key", str(_pubkey(tmp_path)))
    assert init.returncode == 0, init.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = kpc(
            "--config", str(site), "bootcfg", "serve", "--listen", "127.0.0.1", "--port", port
        )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    assert f"error: bootcfg cannot listen on 127.0.0.1:{port}:" in result.stderr
    assert "hint: choose a free port with --port" in result.stderr


def _pubkey(tmp_path: Path) -> Path:
    key = tmp_path / "op.pub"
    key.write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFLvrg6Yt3dGq0Hn4xyqXlYGKNq2yZ4S3j7E1sQy6I7V op\n"
    )
    return key


def test_other_yaml_files_are_bounded_too(tmp_path: Path) -> None:
    passwords = tmp_path / "passwords.yml"
    passwords.write_text(ALIAS_BOMB)
    with pytest.raises(ConfigError, match="expands to more than"):
        read_yaml(passwords, what="kolla passwords file")
    passwords.write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match=r"passwords.yml:2: not valid YAML"):
        read_yaml(passwords, what="kolla passwords file")


def test_ordinary_yaml_with_an_alias_is_fine() -> None:
    check_yaml_shape("base: &b {a: 1, b: [1, 2, 3]}\nother: *b\nlist: [*b, *b]\n", "x.yaml")


def test_a_bootcfg_template_that_is_a_fifo_is_refused_unread(tmp_path: Path) -> None:
    fifo = tmp_path / "install.ign"
    os.mkfifo(fifo)  # nobody writes: reading it would block bootcfg forever
    template = load_template(fifo, generic=False)
    assert template.kind is TemplateKind.REFUSED
    assert template.problem == (
        f"{fifo}: is a named pipe (FIFO), not a file; the bootcfg data file must be a regular file"
    )


@pytest.mark.parametrize(
    ("path", "kind"), [("/dev/zero", "a character device"), ("FIFO", "a named pipe (FIFO)")]
)
def test_a_registry_import_that_is_not_a_file_is_refused_unread(
    site: Path, tmp_path: Path, path: str, kind: str
) -> None:
    if path == "FIFO":
        os.mkfifo(tmp_path / "export.json")  # nobody writes: reading it would block forever
        path = str(tmp_path / "export.json")
    refused(kpc("--config", str(site), "state", "import", path), f"{path}: is {kind}, not a file")


def test_a_registry_import_that_is_missing_says_how_to_make_one(site: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nothing.json"
    refused(kpc("--config", str(site), "state", "import", str(missing)), "kpc state export")


def test_kpcs_own_state_files_are_read_as_bounded_regular_files(tmp_path: Path) -> None:
    from appliance.lab.state import load_state, state_path

    os.mkfifo(state_path(tmp_path))  # a FIFO where lab.json should be: refused, never read
    with pytest.raises(ConfigError, match="is a named pipe"):
        load_state(tmp_path)
