"""`kpc config` and `kpc ignition render` through the real CLI (Typer's CliRunner)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from appliance.cli.main import app
from appliance.config import dump_config, load_config
from appliance.services.units import systemd_services
from tests.conftest import missing, require_tool

runner = CliRunner()
SITE = """\
provisioning: {interface: eth1, address: 198.18.0.2, subnet: 198.18.0.0/24}
os: {version: 3975.2.0}
"""


def kpc(tmp_path: Path, *args: str, **env: str) -> tuple[int, str, str]:
    """Run kpc with HOME in tmp_path (no authorized_keys unless a test writes one)."""
    environ: dict[str, str | None] = {
        "HOME": str(tmp_path),
        "SUDO_USER": None,
        "SSH_CONNECTION": None,
        "KPC_CONFIG": None,
    }
    environ.update(env)
    result = runner.invoke(app, list(args), env=environ)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "kpc.yaml"
    path.write_text(SITE)
    return path


@pytest.fixture
def pubkey(tmp_path: Path) -> Path:
    require_tool("ssh-keygen")
    key = tmp_path / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "op@test", "-f", str(key)],
        check=True,
    )
    return key.with_suffix(".pub")


def test_help_shows_the_command_groups(tmp_path: Path) -> None:
    code, out, _ = kpc(tmp_path, "--help")
    assert code == 0
    for group in ("config", "ignition", "bootcfg", "bmc", "kolla"):
        assert group in out


# --- kpc config ----------------------------------------------------------------------


def host_ipv4() -> tuple[str, str]:
    out = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True)
    for link in json.loads(out.stdout):
        for info in link.get("addr_info", []):
            if info.get("family") == "inet" and not info["local"].startswith("127."):
                return link["ifname"], info["local"]
    missing("this machine has no non-loopback IPv4 address")
    raise AssertionError("unreachable")


def test_init_writes_a_valid_file_and_never_overwrites(tmp_path: Path) -> None:
    require_tool("ip")
    ifname, address = host_ipv4()
    target = tmp_path / "etc" / "kpc.yaml"
    ssh = f"203.0.113.7 50022 {address} 22"
    code, _, err = kpc(tmp_path, "config", "init", "-o", str(target), SSH_CONNECTION=ssh)
    assert code == 0, err
    assert f"wrote {target}" in err
    config = load_config(target)
    assert (config.provisioning.interface, str(config.provisioning.address)) == (ifname, address)
    assert "SSH_CONNECTION" in target.read_text()
    assert oct(target.stat().st_mode & 0o777) == "0o644"

    target.write_text("# my edits\n" + target.read_text())
    code, _, err = kpc(tmp_path, "config", "init", "-o", str(target))
    assert code == 2
    assert f"error: {target} already exists; kpc does not overwrite it" in err
    assert "--force" in err
    assert target.read_text().startswith("# my edits")

    code, _, err = kpc(tmp_path, "config", "init", "-o", str(target), "--force")
    assert code == 0, err
    assert not target.read_text().startswith("# my edits")
    assert [p.name for p in target.parent.iterdir()] == ["kpc.yaml"]  # no temp files left


def test_init_goes_to_the_config_path_or_stdout(tmp_path: Path) -> None:
    require_tool("ip")
    target = tmp_path / "from-env.yaml"
    code, _, err = kpc(tmp_path, "config", "init", KPC_CONFIG=str(target))
    assert code == 0, err
    assert target.exists()
    code, out, err = kpc(tmp_path, "config", "init", "-o", "-")
    assert code == 0, err
    assert out.startswith("# kpc site configuration.")
    assert yaml.safe_load(out)["provisioning"]["interface"]


def test_validate_reports_success_and_every_problem(tmp_path: Path, site: Path) -> None:
    code, out, err = kpc(tmp_path, "-c", str(site), "config", "validate")
    assert code == 0, err
    assert f"{site}: valid" in out
    assert "bootcfg at http://198.18.0.2:8080" in out
    assert "note: bmc.password: the secret in environment variable KPC_BMC_PASSWORD" in err

    site.write_text(SITE + "registry:\n  prot: 5000\nbmc:\n  password: hunter2\n")
    code, out, err = kpc(tmp_path, "-c", str(site), "config", "validate")
    assert code == 2
    assert f"error: {site}: 2 problems in the site configuration" in err
    assert f"  {site}:4: registry.prot: unknown key (did you mean 'port'?" in err
    assert f"  {site}:6: bmc.password: a literal secret is not allowed here" in err
    assert "hunter2" not in err + out
    assert "hint: fix the lines above, then run 'kpc config validate'" in err


def test_validate_refuses_open_secret_files(tmp_path: Path, site: Path) -> None:
    secret = tmp_path / "bmc-password"
    secret.write_text("s3cret")
    secret.chmod(0o644)
    site.write_text(SITE + f"bmc:\n  password: {{file: {secret}}}\n")
    code, _, err = kpc(tmp_path, "-c", str(site), "config", "validate")
    assert code == 2
    assert f"bmc.password: secret file {secret} is readable by group or others (mode 0644)" in err
    assert "s3cret" not in err
    secret.chmod(0o600)
    assert kpc(tmp_path, "-c", str(site), "config", "validate")[0] == 0


def test_missing_config_says_how_to_make_one(tmp_path: Path) -> None:
    code, _, err = kpc(tmp_path, "-c", str(tmp_path / "nope.yaml"), "config", "show")
    assert code == 2
    assert f"error: no site configuration at {tmp_path / 'nope.yaml'}" in err
    assert "kpc config init" in err


def test_show_yaml_and_json(tmp_path: Path, site: Path) -> None:
    expected = dump_config(load_config(site))
    code, out, _ = kpc(tmp_path, "-c", str(site), "config", "show", "--json")
    assert code == 0
    assert json.loads(out) == expected
    code, out, _ = kpc(tmp_path, "-c", str(site), "config", "show")
    assert code == 0
    assert yaml.safe_load(out) == expected
    assert out.startswith("provisioning:")


# --- kpc ignition render -------------------------------------------------------------


def validate_ignition(text: str) -> None:
    require_tool("ignition-validate")
    proc = subprocess.run(["ignition-validate", "-"], input=text, capture_output=True, text=True)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


def test_render_targetnode_to_stdout_validates(tmp_path: Path, site: Path, pubkey: Path) -> None:
    code, out, err = kpc(
        tmp_path, "-c", str(site), "ignition", "render", "targetnode", "--ssh-key", str(pubkey)
    )
    assert code == 0, err
    validate_ignition(out)
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", str(pubkey)], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert f"ssh key: ED25519 {fingerprint} op@test  [{pubkey}:1]" in err
    config = json.loads(out)
    assert config["passwd"]["users"][0]["sshAuthorizedKeys"] == [pubkey.read_text().strip()]


def test_render_reads_authorized_keys_and_reports_bad_lines(
    tmp_path: Path, site: Path, pubkey: Path
) -> None:
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    key = pubkey.read_text().strip()
    (ssh / "authorized_keys").write_text(f"no-pty {key}\nnot a key\n")
    code, out, err = kpc(
        tmp_path, "-c", str(site), "ignition", "render", "install", "--ssh-key", str(pubkey)
    )
    assert code == 0, err
    assert f"warning: skipped {ssh / 'authorized_keys'}:2: not a public key line" in err
    assert f"note: {pubkey}:1: SHA256:" in err and "is already included" in err
    assert "its options (no-pty) are not carried over" in err
    assert json.loads(out)["passwd"]["users"][0]["sshAuthorizedKeys"] == [key]


def test_render_without_keys_warns_or_fails(tmp_path: Path, site: Path) -> None:
    code, out, err = kpc(tmp_path, "-c", str(site), "ignition", "render", "deployhost")
    assert code == 0
    assert "WARNING: no SSH public key found" in err
    validate_ignition(out)
    services = systemd_services(load_config(site))
    assert [u["name"] for u in json.loads(out)["systemd"]["units"]] == [
        "docker.service",
        *(f"{s['name']}.service" for s in services),
    ]

    args = ("-c", str(site), "ignition", "render", "deployhost", "--require-keys")
    code, out, err = kpc(tmp_path, *args)
    assert code == 2
    assert out == ""
    assert "error: no SSH public key found: nobody could log in to the machines" in err

    code, _, err = kpc(tmp_path, *args, "--ssh-key", str(tmp_path / "missing.pub"))
    assert code == 2
    assert f"error: cannot read SSH key file {tmp_path / 'missing.pub'}" in err


def test_render_install_for_a_node_to_a_file(tmp_path: Path, site: Path, pubkey: Path) -> None:
    target = tmp_path / "out" / "install.ign"
    args = ["-c", str(site), "ignition", "render", "install", "--ssh-key", str(pubkey)]
    code, _, err = kpc(tmp_path, *args, "--node", "52-54-00-AB-cd-EF", "-o", str(target))
    assert code == 0, err
    assert f"wrote {target} (install, 1 SSH keys)" in err
    validate_ignition(target.read_text())
    script = json.loads(target.read_text())["storage"]["files"][0]["contents"]["source"]
    assert "NODE_MAC%3D52%3A54%3A00%3Aab%3Acd%3Aef%0A" in script

    code, _, err = kpc(tmp_path, *args, "--node", "52:54:00:zz")
    assert code == 2
    assert "error: --node '52:54:00:zz' is not a MAC address" in err


def test_render_with_token_writes_a_private_file(tmp_path: Path, site: Path) -> None:
    site.write_text(SITE + "bootcfg: {node_auth: open, token: {env: KPC_BOOTCFG_TOKEN}}\n")
    target = tmp_path / "node.ign"
    args = ("-c", str(site), "ignition", "render", "targetnode", "-o", str(target))
    code, _, err = kpc(tmp_path, *args)
    assert code == 2
    assert "the secret in environment variable KPC_BOOTCFG_TOKEN is not set" in err
    code, _, err = kpc(tmp_path, *args, KPC_BOOTCFG_TOKEN="tok-123")
    assert code == 0, err
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert "tok-123" not in err
    validate_ignition(target.read_text())


def test_render_host_version_needs_a_flatcar_host(tmp_path: Path, site: Path) -> None:
    if Path("/etc/os-release").read_text().count("ID=flatcar"):
        pytest.skip("this host is Flatcar: 'host' resolves")
    site.write_text(SITE.replace("3975.2.0", "host"))
    code, out, err = kpc(tmp_path, "-c", str(site), "ignition", "render", "targetnode")
    assert code == 1
    assert out == ""
    assert "error: os.version is 'host' (the same as this deploy host)" in err
    assert "hint: set os.version in the site config" in err


def test_render_rejects_unknown_roles(tmp_path: Path, site: Path) -> None:
    code, _, err = kpc(tmp_path, "-c", str(site), "ignition", "render", "router")
    assert code == 2
    assert "router" in err
