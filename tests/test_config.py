"""The site config: every kind of bad input gets its own plain message (file, line, field)."""

from __future__ import annotations

import ipaddress
import os
import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from appliance.cli.config import init_values
from appliance.config import (
    Bootcfg,
    SecretRef,
    SiteConfig,
    check_secrets,
    config_path,
    load_config,
    parse_config,
    secret_refs,
)
from appliance.errors import ConfigError, SecretError
from appliance.hostinfo import (
    HostNetwork,
    choose_network,
    ssh_server_address,
)
from appliance.install.osrelease import OsRelease, Sourced
from appliance.render.config_template import InitValues, config_template
from tests.conftest import REPO

PROV = "provisioning: {interface: eth0, address: 10.0.0.2, subnet: 10.0.0.0/24}\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "kpc.yaml")
    return info.value.problems or [info.value.message]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bmc: {}\n", "kpc.yaml:1: provisioning: required key is missing"),
        (
            PROV + "os:\n  chanel: beta\n",
            "kpc.yaml:3: os.chanel: unknown key (did you mean 'channel'? "
            "known keys here: flavor, channel, version, mirror, install_from, install_disk)",
        ),
        (
            PROV + "bmc:\n  hosts:\n    - address: 10.1.1.1\n      pasword: {env: A}\n",
            "kpc.yaml:5: bmc.hosts[0].pasword: unknown key (did you mean 'password'? "
            "known keys here: address, user, password, name, protocol)",
        ),
        (
            PROV + "colla: {}\n",
            "kpc.yaml:2: colla: unknown key (did you mean 'kolla'? known keys here: "
            + ", ".join(SiteConfig.model_fields)
            + ")",
        ),
        (
            "provisioning:\n  interface: eth0\n  address: 10.0.0.300\n  subnet: 10.0.0.0/24\n",
            "kpc.yaml:3: provisioning.address: expected an IPv4 address (like 192.0.2.10), "
            "got '10.0.0.300'",
        ),
        (
            "provisioning:\n  interface: eth0\n  address: 10.0.0.2\n  subnet: 10.0.0.1/24\n",
            "kpc.yaml:4: provisioning.subnet: 10.0.0.1/24 has host bits set; "
            "the network is 10.0.0.0/24",
        ),
        (
            "provisioning: {interface: eth0, address: 10.0.1.2, subnet: 10.0.0.0/24}\n",
            "kpc.yaml:1: provisioning: address 10.0.1.2 is not inside subnet 10.0.0.0/24",
        ),
        (
            PROV + "os:\n  channel: stabel\n",
            "kpc.yaml:3: os.channel: expected one of stable, beta, alpha, lts; got 'stabel' "
            "(did you mean stable?)",
        ),
        (
            PROV + "os:\n  version: 1.2\n",
            "kpc.yaml:3: os.version: expected text, got 1.2; put it in quotes",
        ),
        (
            PROV + "os:\n  version: latest\n",
            "kpc.yaml:3: os.version: expected 'host' (the same as this deploy host), 'current', "
            "or a release like 3975.2.0, got 'latest'",
        ),
        (
            PROV + "os:\n  mirror: ftp://mirror/flatcar\n",
            "kpc.yaml:3: os.mirror: 'ftp://mirror/flatcar' is not an http:// or https:// URL "
            "(like https://{channel}.release.flatcar-linux.net/amd64-usr)",
        ),
        (
            PROV + "os:\n  install_disk: {by_path: 'pci-*', by_id: 'wwn-*'}\n",
            "kpc.yaml:3: os.install_disk: give by_path or by_id, not both",
        ),
        (
            PROV + "os:\n  install_disk: {smallest: false}\n",
            "kpc.yaml:3: os.install_disk: no rule picks a disk: set by_path, by_id, "
            "or smallest: true",
        ),
        (
            PROV + "os:\n  install_disk:\n    by_id: /dev/sda\n",
            "kpc.yaml:4: os.install_disk.by_id: '/dev/sda': give a name pattern inside "
            "/dev/disk/by-path or /dev/disk/by-id (like 'pci-0000:00:1f.2-ata-1*'), without '/'",
        ),
        (
            PROV + "bootcfg:\n  port: 99999\n",
            "kpc.yaml:3: bootcfg.port: must be at most 65535, got 99999",
        ),
        (
            PROV + "bootcfg:\n  port: http\n",
            "kpc.yaml:3: bootcfg.port: expected a whole number, got 'http'",
        ),
        (
            PROV + "registry:\n  tls: maybe\n",
            "kpc.yaml:3: registry.tls: expected true or false, got 'maybe'",
        ),
        (
            PROV + "bmc:\n  networks: [10.0.0.0/33]\n",
            "kpc.yaml:3: bmc.networks[0]: expected an IPv4 network in CIDR form "
            "(like 192.0.2.0/24), got '10.0.0.0/33'",
        ),
        (
            PROV + "kolla: []\n",
            "kpc.yaml:2: kolla: expected a mapping of keys (key: value lines), got a list",
        ),
        (
            PROV + "kolla:\n  roles:\n    by_mac:\n      zz:zz: [compute]\n",
            "kpc.yaml:4: kolla.roles.by_mac: not a MAC address: 'zz:zz'",
        ),
        (
            PROV + "bmc:\n  password: {env: X, file: /y}\n",
            "kpc.yaml:3: bmc.password: give exactly one of 'env' or 'file'",
        ),
        (
            PROV + "bmc:\n  password: {env: 'not a name'}\n",
            "kpc.yaml:3: bmc.password.env: expected the name of an environment variable "
            "(upper-case letters, digits and _, like KPC_BMC_PASSWORD); what is written there "
            "is not repeated, in case it is the secret itself",
        ),
    ],
)
def test_bad_input_is_named_precisely(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_misspelt_required_key_gives_both_sides() -> None:
    text = "provisioning:\n  interface: eth0\n  adress: 10.0.0.2\n  subnet: 10.0.0.0/24\n"
    assert problems(text) == [
        "kpc.yaml:1: provisioning.address: required key is missing",
        "kpc.yaml:3: provisioning.adress: unknown key (did you mean 'address'? "
        "known keys here: interface, address, subnet)",
    ]


def test_literal_secrets_are_refused_without_echoing_them() -> None:
    for value in ("hunter2", "12345"):
        [problem] = problems(
            PROV + f"bmc:\n  hosts:\n    - address: 10.1.1.1\n      password: {value}\n"
        )
        assert problem.startswith(
            "kpc.yaml:5: bmc.hosts[0].password: a literal secret is not allowed here; "
            "write a reference instead: {env: KPC_BMC_PASSWORD}"
        )
        assert value not in problem


def test_several_problems_are_listed_in_line_order() -> None:
    text = PROV + "registry:\n  port: 0\nbootcfg:\n  port: 0\n  colour: red\n"
    assert problems(text) == [
        "kpc.yaml:3: registry.port: must be at least 1, got 0",
        "kpc.yaml:5: bootcfg.port: must be at least 1, got 0",
        "kpc.yaml:6: bootcfg.colour: unknown key (known keys here: listen, port, data_dir, "
        + ", ".join(list(Bootcfg.model_fields)[3:])
        + ")",
    ]


def test_yaml_syntax_and_shape_errors() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("provisioning:\n  interface: eth0\n address: x\n", "kpc.yaml")
    assert info.value.message.startswith("kpc.yaml:3: not valid YAML: ")
    assert info.value.hint and "indentation" in info.value.hint

    with pytest.raises(ConfigError) as info:
        parse_config(PROV + "os: {}\nos:\n  channel: beta\n", "kpc.yaml")
    assert info.value.message == (
        "kpc.yaml:3: not valid YAML: key 'os' is given twice (first on line 2); "
        "one would silently replace the other"
    )

    with pytest.raises(ConfigError, match=r"expected a mapping of sections .* got a list"):
        parse_config("- provisioning\n", "kpc.yaml")


def test_missing_file_points_at_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "kpc.yaml")
    assert info.value.message == f"no site configuration at {tmp_path / 'kpc.yaml'}"
    assert info.value.hint and "kpc config init" in info.value.hint


def test_config_path_precedence() -> None:
    assert config_path(Path("/a"), {"KPC_CONFIG": "/b"}) == Path("/a")
    assert config_path(None, {"KPC_CONFIG": "/b"}) == Path("/b")
    assert config_path(None, {}) == Path("/etc/kpc/kpc.yaml")


def test_secret_files_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "bmc-password"
    secret.write_text("s3cret\n")
    secret.chmod(0o640)
    ref = SecretRef(file=secret)
    with pytest.raises(SecretError) as info:
        ref.resolve({})
    assert info.value.message == (
        f"secret file {secret} is readable by group or others (mode 0640)"
    )
    assert info.value.hint == f"chmod 600 {secret}"
    secret.chmod(0o600)
    assert ref.resolve({}) == "s3cret"

    config = parse_config(
        PROV + f"bmc:\n  hosts:\n    - address: 10.1.1.1\n      password: {{file: {secret}}}\n"
        "bootcfg:\n  token: {env: KPC_TOKEN}\n"
    )
    assert [where for where, _ in secret_refs(config)] == [
        "bmc.password",
        "bmc.hosts[0].password",
        "bootcfg.token",
    ]
    secret.chmod(0o644)
    errors, notes = check_secrets(config, {"KPC_BMC_PASSWORD": "x"})
    assert errors == [
        f"bmc.hosts[0].password: secret file {secret} is readable by group or others "
        f"(mode 0644) (chmod 600 {secret})"
    ]
    assert notes == [
        "bootcfg.token: the secret in environment variable KPC_TOKEN is not set (export "
        "KPC_TOKEN=... before running kpc (never pass it as an argument))"
    ]
    assert all("s3cret" not in text for text in errors + notes)


# --- config init: the template and host detection -------------------------------------


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every option path in the model, e.g. ``os.install_disk.by_path``."""
    out: list[str] = []
    for name, field in model.model_fields.items():
        out.append(prefix + name)
        for arg in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and arg is not SecretRef:
                out.extend(_keys(arg, f"{prefix}{name}."))
    return out


VALUES = InitValues("ens3", "198.18.0.2", "198.18.0.0/24", "test", "current", "a note " * 30)


def test_init_template_is_valid_and_uses_the_detected_values() -> None:
    text = config_template(VALUES)
    config = parse_config(text, "init")
    assert config.provisioning.interface == "ens3"
    assert config.provisioning.address == ipaddress.IPv4Address("198.18.0.2")
    assert config.os.version == "current"
    assert config.model_dump(exclude={"provisioning", "os"}) == SiteConfig(
        provisioning=config.provisioning
    ).model_dump(exclude={"provisioning", "os"})
    assert max(len(line) for line in text.splitlines()) <= 100


def test_init_template_documents_every_option() -> None:
    """A new config field must be added to the commented template too."""
    text = config_template(VALUES)
    keys_in_text = {
        line.strip().lstrip("#").strip().lstrip("- ").split(":", 1)[0]
        for line in text.splitlines()
        if ":" in line
    }
    missing = [key for key in _keys(SiteConfig) if key.rsplit(".", 1)[-1] not in keys_in_text]
    assert missing == []


def test_init_template_uncommented_is_still_valid() -> None:
    """Every commented example, switched on, is valid config (the examples do not rot)."""
    text = config_template(VALUES)
    option = re.compile(r'^(- )?("[^"]+"|[a-z_]+):')
    lines = []
    for line in text.splitlines():
        stripped = line.lstrip()
        body = stripped[2:] if stripped.startswith("# ") else ""
        if option.match(body.lstrip()) and not body.startswith("by_id"):
            lines.append(line[: len(line) - len(stripped)] + body)
        else:
            lines.append(line)
    config = parse_config("\n".join(lines), "uncommented")
    assert config.bmc.hosts[0].name == "rack1-u21"
    assert config.kolla.roles.by_mac == {"52:54:00:12:34:56": ["control", "storage"]}
    assert config.images.ca_bundle == Path("/etc/ssl/certs/ca-certificates.crt")


IP_ADDR = """[
 {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
 {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "192.0.2.2", "prefixlen": 24},
                                   {"family": "inet6", "local": "fe80::1", "prefixlen": 64}]},
 {"ifname": "eth1", "addr_info": [{"family": "inet", "local": "198.18.0.2", "prefixlen": 24}]}
]"""
IP_ROUTE = '[{"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"}]'


def test_network_detection_prefers_the_ssh_session_address() -> None:
    ssh = {"SSH_CONNECTION": "198.18.0.99 51234 198.18.0.2 22"}
    assert choose_network(ssh, IP_ROUTE, IP_ADDR) == HostNetwork(
        "eth1",
        ipaddress.IPv4Address("198.18.0.2"),
        ipaddress.IPv4Network("198.18.0.0/24"),
        "the address you reached this host on (198.18.0.2, SSH_CONNECTION)",
    )
    routed = choose_network({}, IP_ROUTE, IP_ADDR)
    assert routed is not None
    assert (routed.interface, str(routed.address), str(routed.subnet)) == (
        "eth0",
        "192.0.2.2",
        "192.0.2.0/24",
    )
    assert routed.reason == "the default route's interface eth0"
    # an SSH address that is not on this host (NAT) falls back to the default route
    nat = {"SSH_CONNECTION": "203.0.113.9 5 203.0.113.10 22"}
    assert choose_network(nat, IP_ROUTE, IP_ADDR) == routed
    assert choose_network({}, "[]", IP_ADDR) is None
    assert ssh_server_address("::1 5 ::ffff:198.18.0.2 22") == (ipaddress.IPv4Address("198.18.0.2"))
    assert ssh_server_address("garbage") is None
    assert ssh_server_address("fe80::1%eth0 5 fe80::2%eth0 22") is None  # IPv6, zone dropped


def test_init_values_follow_the_host_os() -> None:
    flatcar = OsRelease(
        Sourced("flatcar", "/usr/share/flatcar/release"),
        Sourced("3975.2.0", "/usr/share/flatcar/release"),
        Sourced("stable", "/usr/share/flatcar/update.conf"),
    )
    network = HostNetwork(
        "eth1", ipaddress.IPv4Address("198.18.0.2"), ipaddress.IPv4Network("198.18.0.0/24"), "r"
    )
    values = init_values(network, flatcar)
    assert (values.interface, values.address, values.subnet) == (
        "eth1",
        "198.18.0.2",
        "198.18.0.0/24",
    )
    assert values.os_version == "host"
    assert values.os_note == "This host runs Flatcar 3975.2.0: nodes get the same version."

    debian = OsRelease(None, None, None, "Debian GNU/Linux 12 (bookworm)")
    values = init_values(None, debian)
    assert values.os_version == "current"
    assert values.os_note.startswith("This host runs Debian GNU/Linux 12 (bookworm), not Flatcar")
    assert (values.address, values.network_note) == (
        "192.0.2.10",
        "nothing (no IPv4 address found): placeholders, CHANGE THEM",
    )
    parse_config(config_template(values))  # placeholders still make a valid file


EXAMPLE = InitValues(
    "eth1",
    "198.18.0.2",
    "198.18.0.0/24",
    "an example (examples/kpc.yaml); 'kpc config init' writes this host's values",
    "3975.2.0",
    "A pinned release: every node gets exactly this version.",
)


def test_example_config_is_current_and_valid() -> None:
    """examples/kpc.yaml is the init template with example values (KPC_UPDATE_GOLDEN=1)."""
    path = REPO / "examples" / "kpc.yaml"
    if os.environ.get("KPC_UPDATE_GOLDEN") == "1":
        path.write_text(config_template(EXAMPLE))
    assert path.read_text() == config_template(EXAMPLE)
    assert load_config(path).os.version == "3975.2.0"


def test_nodes_install_from_bootcfg_assets_unless_told_to_use_the_mirror() -> None:
    """The image flatcar-install writes comes from where the PXE kernel came from."""
    base = "provisioning: {interface: eth0, address: 10.0.0.2, subnet: 10.0.0.0/24}\n"
    default = parse_config(base)
    assert default.os_install_base == "http://10.0.0.2:8080/assets/flatcar"
    mirror = parse_config(base + "os: {install_from: mirror, channel: beta}\n")
    assert mirror.os_install_base == "https://beta.release.flatcar-linux.net/amd64-usr"
