"""Ignition rendering: golden files, the real ignition-validate, and the embedded scripts run
for real (bash, curl, ip, lsblk) against a bootcfg stand-in on 127.0.0.1.

Only what cannot run here is faked: flatcar-install (it would write a disk), systemctl
(it would reboot this machine) and, for the disk-rule cases, lsblk's list of disks.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import pytest

from appliance.bootcfg.server import CHECKIN_NAMESPACE, checkin_message
from appliance.config import SiteConfig, parse_config
from appliance.drivers import sshsig
from appliance.errors import ConfigError
from appliance.keys import AuthorizedKey, parse_authorized_keys
from appliance.render.ignition import (
    ROLES,
    Renderer,
    RenderError,
    check_ignition,
    dumps,
    render_ignition,
    request_context,
    site_context,
)
from tests.conftest import REPO, missing, require_tool

GOLDEN = REPO / "tests" / "golden"
TEMPLATES = REPO / "ignition"
UPDATE = os.environ.get("KPC_UPDATE_GOLDEN") == "1"
NODE_MAC = "52:54:00:12:34:56"
SERVICES = [
    {
        "name": "kpc-bootcfg",
        "description": "kpc bootcfg (matchbox-compatible boot configs)",
        "exec_start": "/usr/bin/docker run --rm --name kpc-bootcfg --net=host kpc/bootcfg:latest",
        "exec_stop": "/usr/bin/docker stop kpc-bootcfg",
    },
    {
        "name": "kpc-registry",
        "description": "kpc image registry",
        "exec_start": "/usr/bin/docker run --rm --name kpc-registry -p 5000:5000 kpc/registry",
        "exec_stop": "/usr/bin/docker stop kpc-registry",
    },
]


def golden_config() -> SiteConfig:
    return parse_config((GOLDEN / "site.yaml").read_text(), "site.yaml")


def golden_keys() -> list[AuthorizedKey]:
    return parse_authorized_keys((GOLDEN / "operator.pub").read_text()).keys


def render(role: str, config: SiteConfig, keys: list[AuthorizedKey], **kw: Any) -> dict[str, Any]:
    mac = kw.pop("mac", NODE_MAC)
    ctx = site_context(config, keys, **kw) | request_context(mac)
    return render_ignition((TEMPLATES / f"{role}.ign.j2").read_text(), ctx, source=role)


def validate(config: dict[str, Any]) -> None:
    """The real ignition-validate must accept it without a word (it only warns on typos)."""
    require_tool("ignition-validate")
    proc = subprocess.run(
        ["ignition-validate", "-"], input=dumps(config), capture_output=True, text=True
    )
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


def decode(source: str) -> str:
    assert source.startswith("data:,")
    return urllib.parse.unquote(source.removeprefix("data:,"))


def file_text(config: dict[str, Any], path: str) -> str:
    [entry] = [f for f in config["storage"]["files"] if f["path"] == path]
    return decode(entry["contents"]["source"])


# --- golden files and ignition-validate -----------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_golden(role: str) -> None:
    services = SERVICES if role == "deployhost" else ()
    config = render(role, golden_config(), golden_keys(), services=services)
    path = GOLDEN / f"{role}.ign"
    if UPDATE:
        path.write_text(dumps(config))
    assert dumps(config) == path.read_text(), f"regenerate with KPC_UPDATE_GOLDEN=1: {path}"
    validate(config)


@pytest.mark.parametrize("role", ["install", "targetnode"])
def test_bootcfg_peers_are_tried_after_bootcfg(role: str) -> None:
    """With bootcfg.peers (several deploy hosts), install-complete and check-ins go to the
    first of bootcfg, then its peers, that answers; still valid Ignition."""
    text = (GOLDEN / "site.yaml").read_text() + (
        "bootcfg: {peers: ['http://10.0.0.6:8080', 'http://10.0.0.7:8080']}\n"
    )
    rendered = render(role, parse_config(text), golden_keys())
    validate(rendered)
    path = "/opt/kpc/bin/kpc-install" if role == "install" else "/opt/kpc/bin/kpc-checkin"
    script = file_text(rendered, path)
    assert "BOOTCFG_PEERS='http://10.0.0.6:8080 http://10.0.0.7:8080'" in script
    assert 'for url in "$BOOTCFG_URL" $BOOTCFG_PEERS; do' in script
    with pytest.raises(ConfigError):
        parse_config(text.replace("http://10.0.0.7:8080", "10.0.0.7"))


@pytest.mark.parametrize("role", ROLES)
def test_variants_validate(role: str) -> None:
    """No keys, no MAC, TLS registry, another ssh user, a token: still valid Ignition."""
    text = (GOLDEN / "site.yaml").read_text() + (
        "registry: {tls: true, port: 443}\nssh: {user: deploy}\nbootcfg: {port: 8443}\n"
    )
    config = parse_config(text)
    rendered = render(role, config, [], mac=None, bootcfg_token="s3cr3t-t0ken")
    validate(rendered)
    users = {u["name"]: u for u in rendered["passwd"]["users"]}
    assert users["core"]["sshAuthorizedKeys"] == []
    if role != "install":
        assert users["deploy"]["groups"] == ["sudo", "docker"]
        assert json.loads(file_text(rendered, "/etc/docker/daemon.json")) == {}
    if role != "deployhost":
        [token] = [f for f in rendered["storage"]["files"] if f["path"] == "/etc/kpc/bootcfg-token"]
        assert token["mode"] == 0o600
        assert decode(token["contents"]["source"]) == "Authorization: Bearer s3cr3t-t0ken\n"


def test_roles_carry_what_they_promise() -> None:
    config, keys = golden_config(), golden_keys()
    for role in ROLES:
        rendered = render(role, config, keys, services=SERVICES if role == "deployhost" else ())
        assert rendered["passwd"]["users"][0] == {
            "name": "core",
            "sshAuthorizedKeys": [keys[0].line],
        }
    deploy = render("deployhost", config, keys, services=SERVICES)
    units = {u["name"]: u for u in deploy["systemd"]["units"]}
    assert set(units) == {"docker.service", "kpc-bootcfg.service", "kpc-registry.service"}
    assert f"ExecStart={SERVICES[0]['exec_start']}\n" in units["kpc-bootcfg.service"]["contents"]
    assert json.loads(file_text(deploy, "/etc/docker/daemon.json")) == {
        "insecure-registries": ["198.18.0.2:5000"]
    }
    target = render("targetnode", config, keys)
    links = {link["path"]: link["target"] for link in target["storage"]["links"]}
    assert links == {"/etc/extensions/python.raw": "/opt/extensions/python/python.raw"}
    [sysext] = [f for f in target["storage"]["files"] if f["path"].endswith("python.raw")]
    assert sysext["contents"]["source"] == "http://198.18.0.2:8080/assets/sysext/python.raw"
    assert "kpc-checkin.service" in {u["name"] for u in target["systemd"]["units"]}


# --- errors: never a half-rendered config ---------------------------------------------


def test_render_errors_are_specific() -> None:
    ctx = site_context(golden_config(), golden_keys()) | request_context(NODE_MAC)
    with pytest.raises(RenderError, match=r"t\.j2: the template uses a variable that is not "):
        render_ignition('{"ignition": {"version": {{ nope | json }}}}', ctx, source="t.j2")
    with pytest.raises(RenderError, match=r"t\.j2:2: template syntax error"):
        render_ignition("{\n{% if %}", ctx, source="t.j2")
    with pytest.raises(RenderError, match=r"not JSON \(rendered line 1, column 32") as info:
        render_ignition('{"ignition": {"version": {{ os_version }}}}', ctx, source="t.j2")
    assert info.value.hint == "every value in a template must go through the 'json' filter"
    with pytest.raises(RenderError, match=r"storag: unknown key"):
        render_ignition('{"ignition": {"version": "3.3.0"}, "storag": {}}', ctx, source="t")
    with pytest.raises(RenderError, match=r"ignition.version: expected '3.3.0', got '3.4.0'"):
        render_ignition('{"ignition": {"version": "3.4.0"}}', ctx, source="t")


def test_structure_check_catches_what_validate_would() -> None:
    base = {"ignition": {"version": "3.3.0"}}
    assert check_ignition(base) == []
    bad = base | {
        "storage": {
            "files": [
                {"path": "etc/x", "contents": {"source": "data:nocomma"}},
                {"path": "/a", "mode": "0644", "contents": {"source": "ftp://x/y"}},
                {"path": "/a"},
            ],
            "links": [{"path": "/l"}],
        },
        "systemd": {"units": [{"name": "no spaces allowed"}, {"name": "x.service", "enable": 1}]},
        "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": "ssh-ed25519 AAAA"}]},
    }
    assert check_ignition(bad) == [
        "storage.files[1].mode: expected an integer",
        "systemd.units[1].enable: unknown key",
        "passwd.users[0].sshAuthorizedKeys: expected a list",
    ]
    bad["storage"]["files"][1]["mode"] = 0o644
    del bad["systemd"]["units"][1]["enable"]
    bad["passwd"]["users"][0]["sshAuthorizedKeys"] = []
    assert check_ignition(bad) == [
        "storage.files[0].path: 'etc/x' is not an absolute path",
        "storage.files[0].contents.source: a data: URL needs a ',' before its contents",
        "storage.files[1].contents.source: 'ftp://x/y' is not a URL Ignition can fetch",
        "storage.files[2].path: /a is defined twice",
        "storage.links[0].target: a link needs a target",
        "systemd.units[0].name: 'no spaces allowed' is not a systemd unit name",
    ]


def test_host_version_must_be_resolved() -> None:
    config = parse_config("provisioning: {interface: e, address: 10.0.0.2, subnet: 10.0.0.0/24}")
    assert config.os.version == "host"
    with pytest.raises(RenderError, match=r"os\.version is 'host'") as info:
        site_context(config, [])
    assert info.value.hint and "3975.2.0" in info.value.hint
    assert site_context(config, [], os_version="3815.2.5")["os_version"] == "3815.2.5"


def test_services_are_checked() -> None:
    config = golden_config()
    good = dict(SERVICES[0])
    for bad, message in (
        ({**good, "exec_start": "a\n[Service]\nUser=root"}, "exec_start must be one line"),
        ({**good, "name": "kpc bootcfg"}, "cannot be a systemd unit name"),
        ({**good, "name": "x.service"}, "cannot be a systemd unit name"),
        ({k: v for k, v in good.items() if k != "exec_stop"}, "service #1 has no exec_stop"),
    ):
        with pytest.raises(RenderError, match=message):
            site_context(config, [], services=[bad])
    with pytest.raises(RenderError, match="service names repeat"):
        site_context(config, [], services=[good, good])


# --- the embedded scripts, run for real ------------------------------------------------


class Bootcfg:
    """A bootcfg stand-in on 127.0.0.1 that records what the node scripts send."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes, dict[str, str]]] = []
        self.installed = b'{"ignition": {"version": "3.3.0"}}\n'
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else b""
                outer.requests.append((self.command, self.path, body, dict(self.headers)))

            def do_GET(self) -> None:
                self._record()
                data = outer.installed if self.path.startswith("/ignition?") else b"nope"
                self.send_response(200 if data != b"nope" else 404)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                self._record()
                self.send_response(200)
                self.send_header("Content-Length", "3")
                self.end_headers()
                self.wfile.write(b"ok\n")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def bootcfg() -> Iterator[Bootcfg]:
    server = Bootcfg()
    yield server
    server.close()


HOSTILE_MIRROR = 'https://mirror.example/it\'s "$(touch MARK)" `touch MARK` $HOME;x&y'


def site(port: int, extra: str = "") -> SiteConfig:
    text = (
        "provisioning: {interface: lo, address: 127.0.0.1, subnet: 127.0.0.0/8}\n"
        f"bootcfg: {{port: {port}}}\n"
        "os:\n  version: 3975.2.0\n  install_from: mirror\n  mirror: "
        + json.dumps(HOSTILE_MIRROR)
        + "\n"
        + extra
    )
    return parse_config(text)


FAKES = {
    "flatcar-install": 'printf "%s\\n" "$@" > "$FAKE_LOG/flatcar-install.args"\n'
    'while [ $# -gt 0 ]; do [ "$1" = -i ] && cp "$2" "$FAKE_LOG/ignition.json"; shift; done\n',
    "systemctl": 'printf "%s\\n" "$*" >> "$FAKE_LOG/systemctl"\n',
}
FAKE_LSBLK = """[ "$1" = -dbnpo ] || exec /usr/bin/lsblk "$@"
cat <<'EOF'
/dev/zram0 0 disk 0 0
/dev/loop0 100000 loop 0 0
/dev/sr0 1000 rom 1 0
/dev/sda 16000000 disk 1 0
/dev/sdb 8000000 disk 0 1
/dev/nvme0n1 500107862016 disk 0 0
/dev/sdc 240057409536 disk 0 0
EOF
"""


def run_script(
    script: str,
    tmp: Path,
    *,
    fake_lsblk: bool = False,
    links: Path | None = None,
    fakes: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    require_tool("bash", "curl", "ip", "lsblk", "jq", "ssh-keygen")
    bindir = tmp / "bin"
    logdir = tmp / "log"
    bindir.mkdir(exist_ok=True)
    logdir.mkdir(exist_ok=True)
    fakes = dict(fakes or FAKES) | ({"lsblk": FAKE_LSBLK} if fake_lsblk else {})
    for name, body in fakes.items():
        (bindir / name).write_text("#!/bin/bash\n" + body)
        (bindir / name).chmod(0o755)
    (tmp / "script").write_text(script)
    host_key = tmp / "ssh_host_ed25519_key"
    if not host_key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True
        )
    env = {
        "PATH": f"{bindir}:/usr/sbin:/usr/bin:/sbin:/bin",
        "FAKE_LOG": str(logdir),
        "HOME": str(tmp),
        "KPC_DISK_LINKS": str(links or tmp / "nodisks"),
        "KPC_HOST_KEY": str(host_key),
    }
    return subprocess.run(
        ["bash", str(tmp / "script")], cwd=tmp, env=env, capture_output=True, text=True, timeout=60
    )


def install_script(config: SiteConfig, mac: str | None = NODE_MAC) -> str:
    return file_text(render("install", config, [], mac=mac), "/opt/kpc/bin/kpc-install")


def test_install_script_end_to_end(bootcfg: Bootcfg, tmp_path: Path) -> None:
    """Fetch, pick the smallest fixed disk, flatcar-install with hostile values, report, reboot."""
    proc = run_script(install_script(site(bootcfg.port)), tmp_path, fake_lsblk=True)
    assert proc.returncode == 0, proc.stderr
    log = tmp_path / "log"
    args = (log / "flatcar-install.args").read_text().splitlines()
    assert args[:8] == ["-d", "/dev/sdc", "-C", "stable", "-V", "3975.2.0", "-b", HOSTILE_MIRROR]
    assert args[8] == "-i"
    # the installed config gains the node's new SSH host key; install-complete reports it
    installed = json.loads((log / "ignition.json").read_bytes())
    keys = {f["path"]: f for f in installed["storage"]["files"]}
    assert set(keys) == {"/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key.pub"}
    assert keys["/etc/ssh/ssh_host_ed25519_key"]["mode"] == 0o600
    public = base64.b64decode(
        keys["/etc/ssh/ssh_host_ed25519_key.pub"]["contents"]["source"].split(",", 1)[1]
    ).decode()
    private = base64.b64decode(
        keys["/etc/ssh/ssh_host_ed25519_key"]["contents"]["source"].split(",", 1)[1]
    ).decode()
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert (log / "systemctl").read_text() == "reboot\n"
    assert not (tmp_path / "MARK").exists()
    assert [(m, p) for m, p, _, _ in bootcfg.requests] == [
        ("GET", f"/ignition?mac={NODE_MAC}&os=installed"),
        ("POST", f"/install-complete?mac={NODE_MAC}"),
    ]
    _, _, body, headers = bootcfg.requests[1]
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"host_key": " ".join(public.split()[:2])}
    assert "kpc-install: installing Flatcar 3975.2.0 (stable)" in proc.stderr


def test_install_script_says_why_flatcar_install_failed(bootcfg: Bootcfg, tmp_path: Path) -> None:
    """A failing flatcar-install: its output on the console as it runs, its last line in
    kpc-install's FAILED line (what 'kpc lab status' shows), no install-complete, no reboot."""
    failing = (
        'echo "flatcar-install: downloading $8/3975.2.0/flatcar_production_image.bin.bz2"\n'
        'echo "flatcar-install: error: the signature does not verify; nothing was written" >&2\n'
        "exit 1\n"
    )
    failing_fakes = {**FAKES, "flatcar-install": failing}
    proc = run_script(
        install_script(site(bootcfg.port)), tmp_path, fake_lsblk=True, fakes=failing_fakes
    )
    assert proc.returncode == 1, proc.stderr
    assert "flatcar-install: downloading " in proc.stderr
    assert (
        "kpc-install: FAILED: flatcar-install failed on /dev/sdc: error: the signature does not "
        "verify; nothing was written\n" in proc.stderr
    )
    assert "this machine stays up" in proc.stderr
    assert [p for _, p, _, _ in bootcfg.requests] == [f"/ignition?mac={NODE_MAC}&os=installed"]
    assert not (tmp_path / "log" / "systemctl").exists()


def test_install_script_disk_patterns(bootcfg: Bootcfg, tmp_path: Path) -> None:
    """by-path globs: partitions ignored, exactly one disk or a refusal; names never split."""
    links = tmp_path / "disk" / "by-path"
    links.mkdir(parents=True)
    odd = "pci-0000:00:1f.2-ata-1.0 $(touch MARK)'x\""
    for name, target in (
        (odd, "sda"),
        (odd + "-part1", "sda1"),
        ("pci-0000:00:1f.2-ata-2.0", "sdb"),
        ("pci-0000:00:1f.2-ata-2.0-also", "sdb"),
    ):
        (tmp_path / target).touch()
        (links / name).symlink_to(tmp_path / target)

    def attempt(pattern: str) -> subprocess.CompletedProcess[str]:
        extra = "  install_disk: {by_path: " + json.dumps(pattern) + "}\n"
        script = install_script(site(bootcfg.port, extra))
        return run_script(script, tmp_path, links=tmp_path / "disk")

    proc = attempt("pci-0000:00:1f.2-ata-1.0 $(touch MARK)'x\"*")
    assert proc.returncode == 0, proc.stderr
    args = (tmp_path / "log" / "flatcar-install.args").read_text().splitlines()
    assert args[:2] == ["-d", str(tmp_path / "sda")]
    assert not (tmp_path / "MARK").exists()

    proc = attempt("pci-0000:00:1f.2-ata-2.0*")  # two links, one disk: fine
    assert proc.returncode == 0, proc.stderr
    args = (tmp_path / "log" / "flatcar-install.args").read_text().splitlines()
    assert args[:2] == ["-d", str(tmp_path / "sdb")]

    (tmp_path / "log" / "flatcar-install.args").unlink()
    (tmp_path / "log" / "systemctl").unlink()
    proc = attempt("pci-*")
    assert proc.returncode == 1
    assert "matches 2 disks" in proc.stderr and "make it match exactly one" in proc.stderr
    proc = attempt("usb-*")
    assert proc.returncode == 1
    assert (
        "kpc-install: FAILED: the install disk rule (os.install_disk.by_path) matches no disk"
        in (proc.stderr)
    )
    assert "this machine stays up" in proc.stderr
    assert not (tmp_path / "log" / "flatcar-install.args").exists()
    assert not (tmp_path / "log" / "systemctl").exists()


def test_install_script_stops_when_bootcfg_fails(tmp_path: Path) -> None:
    """Nothing is installed when the installed config cannot be fetched."""
    server = Bootcfg()
    port = server.port
    server.close()  # nothing listens on the port any more
    script = install_script(site(port)).replace("--retry 10", "--retry 0")
    proc = run_script(script, tmp_path, fake_lsblk=True)
    assert proc.returncode == 1
    assert f"FAILED: cannot fetch http://127.0.0.1:{port}/ignition?mac={NODE_MAC}&os=installed" in (
        proc.stderr
    )
    assert not (tmp_path / "log" / "flatcar-install.args").exists()


def test_install_script_without_mac_uses_default_route_nic(
    bootcfg: Bootcfg, tmp_path: Path
) -> None:
    route = subprocess.run(["ip", "-j", "route", "show", "default"], capture_output=True, text=True)
    routes = json.loads(route.stdout or "[]")
    if not routes:
        missing("this machine has no default route")
        return
    mac = Path(f"/sys/class/net/{routes[0]['dev']}/address").read_text().strip()
    proc = run_script(install_script(site(bootcfg.port), mac=None), tmp_path, fake_lsblk=True)
    assert proc.returncode == 0, proc.stderr
    assert bootcfg.requests[0][1] == f"/ignition?mac={mac}&os=installed"


def test_checkin_script_posts_contract_facts(bootcfg: Bootcfg, tmp_path: Path) -> None:
    """The real script on this machine: real ip, lsblk, os-release, curl."""
    rendered = render("targetnode", site(bootcfg.port), [])
    proc = run_script(file_text(rendered, "/opt/kpc/bin/kpc-checkin"), tmp_path)
    assert proc.returncode == 0, proc.stderr
    [(method, path, body, headers)] = bootcfg.requests
    assert (method, path) == ("POST", f"/checkin?mac={NODE_MAC}")
    assert headers["Content-Type"] == "application/json"
    # signed with the node's host key, as bootcfg verifies it
    public = (tmp_path / "ssh_host_ed25519_key.pub").read_text()
    when = int(headers["X-Kpc-Time"])
    message = checkin_message(NODE_MAC, when, body)
    sshsig.verify(public, CHECKIN_NAMESPACE, message, headers["X-Kpc-Signature"])
    facts = json.loads(body)
    assert set(facts) == {"hostname", "os", "interfaces", "disks", "address"}
    assert facts["hostname"] == Path("/proc/sys/kernel/hostname").read_text().strip()
    os_release = dict(
        line.split("=", 1)
        for line in Path("/etc/os-release").read_text().splitlines()
        if "=" in line
    )
    assert facts["os"] == {
        "name": os_release["ID"].strip('"'),
        "version": os_release.get("VERSION_ID", "unknown").strip('"'),
    }
    assert facts["address"] == "127.0.0.1"
    real = json.loads(
        subprocess.run(
            ["lsblk", "-J", "-b", "-d", "-o", "NAME,SIZE,TYPE"], capture_output=True, text=True
        ).stdout
    )
    expected = [
        {"name": d["name"], "size": int(d["size"])}
        for d in real["blockdevices"]
        if d["type"] == "disk" and not d["name"].startswith(("zram", "loop", "ram", "sr"))
    ]
    assert facts["disks"] == expected
    for iface in facts["interfaces"]:
        assert set(iface) == {"name", "mac", "addresses"}
        assert iface["name"] != "lo"
        assert iface["mac"] == Path(f"/sys/class/net/{iface['name']}/address").read_text().strip()


def test_checkin_json_strings_survive_hostile_text(tmp_path: Path) -> None:
    rendered = render("targetnode", golden_config(), [])
    script = file_text(rendered, "/opt/kpc/bin/kpc-checkin")
    start = script.index("json_string() {")
    functions = script[start : script.index("default_dev() {")]
    hostile = 'we"ird\\ho\tst\nname $(x) `y` \x01é'
    proc = subprocess.run(
        ["bash", "-c", functions + 'json_list "$1" "" "plain"', "bash", hostile],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == ['we"ird\\hostname $(x) `y` é', "", "plain"]


def test_every_template_variable_is_documented() -> None:
    readme = (TEMPLATES / "README.md").read_text()
    readme = readme[readme.index("## Variables") : readme.index("## What the nodes send back")]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", readme, flags=re.MULTILINE))
    context = site_context(golden_config(), golden_keys()) | request_context(NODE_MAC)
    assert documented == set(context)
    used: set[str] = set()
    env = jinja2.Environment()
    env.filters.update(json=str, shquote=str, data_url=str)
    for role in ROLES:
        used |= jinja2.meta.find_undeclared_variables(
            env.parse((TEMPLATES / f"{role}.ign.j2").read_text())
        )
    assert used <= set(context), used - set(context)


def test_renderer_reuses_compilations_and_sees_edits() -> None:
    renderer = Renderer(max_templates=2)
    ctx = site_context(golden_config(), golden_keys()) | request_context(NODE_MAC)
    text = (TEMPLATES / "targetnode.ign.j2").read_text()
    first = renderer.render(text, ctx, source="t")
    assert (
        renderer.render(text, ctx, source="t")
        == first
        == render("targetnode", golden_config(), golden_keys())
    )
    edited = text.replace('"enabled": true, "contents"', '"enabled": false, "contents"')
    units = renderer.render(edited, ctx, source="t")["systemd"]["units"]
    assert [u["enabled"] for u in units] == [True, False]
    renderer.render('{"ignition": {"version": "3.3.0"}}', ctx, source="t")  # evicts one
    with pytest.raises(RenderError, match="not defined"):
        renderer.render("{{ nope | json }}", ctx, source="t")
