"""A data dir in matchbox's layout, written the way matchbox's docs and examples shape it,
served unchanged: every endpoint answers what matchbox's code answers for the same data and
request (status and body), except the documented differences (docs/matchbox-compatibility.md).
The fixtures are this test's own; their shapes follow matchbox's examples/ and docs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bootcfg.server import Server
from tests.conftest import require_tool

MAC = "52:54:00:89:d8:10"
OTHER = "52:54:00:00:00:01"
FLATCAR = "/assets/flatcar/3227.2.0"
FCOS = "/assets/fedora-coreos/36"

FILES: dict[str, str] = {
    # profiles/: matchbox's example shapes (an installer, the installed OS, Fedora CoreOS
    # with "--name main" initrd options, one referencing a Butane file)
    "profiles/flatcar-install.json": json.dumps({
        "id": "flatcar-install",
        "name": "Flatcar Linux install to disk",
        "boot": {
            "kernel": f"{FLATCAR}/flatcar_production_pxe.vmlinuz",
            "initrd": [f"{FLATCAR}/flatcar_production_pxe_image.cpio.gz"],
            "args": [
                "initrd=flatcar_production_pxe_image.cpio.gz",
                "flatcar.config.url=http://matchbox.example.com:8080/ignition?uuid=${uuid}&mac=${mac:hexhyp}",
                "flatcar.first_boot=yes",
            ],
        },
        "ignition_id": "flatcar-install.ign",
    }),
    "profiles/flatcar.json": json.dumps({
        "id": "flatcar",
        "boot": {
            "kernel": f"{FLATCAR}/flatcar_production_pxe.vmlinuz",
            "initrd": [f"{FLATCAR}/flatcar_production_pxe_image.cpio.gz"],
            "args": ["initrd=flatcar_production_pxe_image.cpio.gz", "flatcar.autologin"],
        },
        "ignition_id": "node.ign",
        "generic_id": "setup.cfg.tmpl",
    }),
    "profiles/fedora-coreos.json": json.dumps({
        "id": "fedora-coreos",
        "boot": {
            "kernel": f"{FCOS}/kernel-aarch64",
            "initrd": [f"--name main {FCOS}/initramfs.aarch64.img"],
            "args": ["initrd=main", "ignition.firstboot", "ignition.platform.id=metal"],
        },
        "ignition_id": "site/fcos.ign",
    }),
    "profiles/worker.json": json.dumps({"id": "worker", "ignition_id": "worker.yaml"}),
    "profiles/etcd.json": json.dumps({"id": "etcd", "ignition_id": "etcd.json.tmpl"}),
    # groups/: no "id" (as docs/matchbox.md prints them), a default, selectors on os, mac,
    # arch (from /boot.ipxe's chain), an empty-valued selector, a missing profile, a broken
    # file and a directory of example groups (both skipped, the rest serves)
    "groups/default.json": json.dumps({"name": "install", "profile": "flatcar-install"}),
    "groups/installed.json": json.dumps(
        {"name": "installed", "profile": "flatcar", "selector": {"os": "installed"},
         "metadata": {"etcd_name": "any", "ssh_authorized_keys": ["ssh-ed25519 AAAA op"]}}
    ),
    "groups/node1.json": json.dumps({
        "name": "node1",
        "profile": "flatcar",
        "selector": {"mac": "52-54-00-89-D8-10", "os": "installed"},
        "metadata": {
            "etcd_name": "node1",
            "port": 2379,
            "big": 1000000,
            "tls": True,
            "nested": {"zone": "z1", "list": [1, 2]},
            "nothing": None,
            "ssh_authorized_keys": ["ssh-ed25519 AAAA op", "ssh-ed25519 BBBB ci"],
        },
    }),
    "groups/arm.json": json.dumps(
        {"profile": "fedora-coreos", "selector": {"arch": "arm64", "os": "installed"}}
    ),
    "groups/live.json": json.dumps(
        {"profile": "flatcar", "selector": {"os": "live", "stage": ""},
         "metadata": {"etcd_name": "live", "ssh_authorized_keys": []}}
    ),
    "groups/ghost.json": json.dumps({"profile": "no-such-profile", "selector": {"os": "ghost"},
                                     "metadata": {"a": "b"}}),
    "groups/butane.json": json.dumps({"profile": "worker", "selector": {"os": "butane"}}),
    "groups/etcd.json": json.dumps({"profile": "etcd", "selector": {"role": "etcd"},
        "metadata": {"etcd_name": "etcd0", "peers": ["etcd0=http://10.0.0.10:2380",
                     "etcd1=http://10.0.0.11:2380"], "port": 2379}}),
    "groups/broken.json": '{"profile": "flatcar", "selector": {"os": "installed"',
    "groups/examples/other.json": json.dumps({"profile": "flatcar"}),
    # ignition/: plain Ignition, a Go template, one in a subdirectory, a Butane file
    "ignition/flatcar-install.ign": json.dumps({"ignition": {"version": "3.4.0"}}),
    "ignition/site/fcos.ign": json.dumps({"ignition": {"version": "3.3.0"}}),
    "ignition/node.ign": """{
  "ignition": {"version": "3.4.0"},
  "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": [
    {{- range $i, $k := .ssh_authorized_keys}}{{if $i}},{{end}}"{{$k}}"{{end -}}
  ]}]},
  "storage": {"files": [{"path": "/etc/hostname", "mode": 420,
    "contents": {"source": "data:,{{.etcd_name}}"}}{{if index .request.query "foo"}},
    {"path": "/etc/foo", "contents": {"source": "data:,{{.request.query.foo}}"}}{{end}}]}
}
""",
    # Ignition JSON written as a Go template (spec 3.3.0, what Debian's Ignition validates)
    "ignition/etcd.json.tmpl": """{{/* an etcd member */ -}}
{
  "ignition": {"version": "3.3.0"},
  "systemd": {"units": [{"name": "etcd-member.service", "enabled": true,
    "contents": "[Service]\\nEnvironment=ETCD_NAME={{.etcd_name}}\\n
    {{- /* continued */ -}} Environment=ETCD_INITIAL_CLUSTER=
    {{- range $i, $p := .peers}}{{if $i}},{{end}}{{$p}}{{end}}\\nEnvironment=PORT={{.port}}\\n
    {{- with index .request.query "mac"}}Environment=MAC={{.}}\\n{{end -}}
    ExecStart=/usr/bin/etcd\\n[Install]\\nWantedBy=multi-user.target\\n"}]},
  "storage": {"files": [{"path": "/etc/hostname", "mode": 420, "overwrite": true,
    "contents": {"source": "data:,{{.etcd_name}}"}}]}
}
""",
    "ignition/worker.yaml": "variant: flatcar\nversion: 1.1.0\npasswd: {}\n",
    # generic/: a Go template
    "generic/setup.cfg.tmpl": (
        "name={{.etcd_name}}\nmac={{.request.query.mac}}\n"
        "{{with index .request.query \"foo\"}}foo={{.}}\n{{end}}"
        "raw={{.request.raw_query}}\n"
    ),
    "assets/flatcar/3227.2.0/flatcar_production_pxe.vmlinuz": "KERNEL",
}  # fmt: skip


@pytest.fixture(scope="module")
def matchbox_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("matchbox") / "var-lib-matchbox"
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture(scope="module")
def mb(matchbox_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(matchbox_dir, tmp_path_factory.mktemp("db") / "machines.db").start()
    try:
        yield srv
    finally:
        srv.stop()


INSTALL_IPXE = (
    "#!ipxe\n"
    f"kernel {FLATCAR}/flatcar_production_pxe.vmlinuz initrd=flatcar_production_pxe_image.cpio.gz"
    " flatcar.config.url=http://matchbox.example.com:8080/ignition?uuid=${uuid}&mac=${mac:hexhyp}"
    " flatcar.first_boot=yes\n"
    f"initrd {FLATCAR}/flatcar_production_pxe_image.cpio.gz\n"
    "boot\n"
)
FLATCAR_IPXE = (
    "#!ipxe\n"
    f"kernel {FLATCAR}/flatcar_production_pxe.vmlinuz initrd=flatcar_production_pxe_image.cpio.gz"
    " flatcar.autologin\n"
    f"initrd {FLATCAR}/flatcar_production_pxe_image.cpio.gz\n"
    "boot\n"
)
FCOS_IPXE = (
    "#!ipxe\n"
    f"kernel {FCOS}/kernel-aarch64 initrd=main ignition.firstboot ignition.platform.id=metal\n"
    f"initrd --name main {FCOS}/initramfs.aarch64.img\n"
    "boot\n"
)
FLATCAR_GRUB = (
    "default=0\nfallback=1\ntimeout=1\n"
    'menuentry "CoreOS (EFI)" {\necho "Loading kernel"\n'
    f'linuxefi "{FLATCAR}/flatcar_production_pxe.vmlinuz"'
    " initrd=flatcar_production_pxe_image.cpio.gz flatcar.autologin\n"
    f'echo "Loading initrd"\ninitrdefi  "{FLATCAR}/flatcar_production_pxe_image.cpio.gz"\n}}\n'
    'menuentry "CoreOS (BIOS)" {\necho "Loading kernel"\n'
    f'linux "{FLATCAR}/flatcar_production_pxe.vmlinuz"'
    " initrd=flatcar_production_pxe_image.cpio.gz flatcar.autologin\n"
    f'echo "Loading initrd"\ninitrd  "{FLATCAR}/flatcar_production_pxe_image.cpio.gz"\n}}\n'
)
NODE1_Q = "mac=52-54-00-89-d8-10&os=installed"


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/", 200, "matchbox\n"),
        ("/nope", 404, None),
        ("/boot.ipxe", 200,
         "#!ipxe\nchain ipxe?uuid=${uuid}&mac=${mac:hexhyp}&domain=${domain}"
         "&hostname=${hostname}&serial=${serial}&arch=${buildarch:uristring}\n"),
        ("/boot.ipxe.0", 200, None),
        # the default group (no selector) serves the installer to an unknown machine
        (f"/ipxe?uuid=&mac={OTHER.replace(':', '-')}&domain=&hostname=&serial=&arch=x86_64",
         200, INSTALL_IPXE),
        ("/ipxe?os=installed&arch=x86_64", 200, FLATCAR_IPXE),
        ("/grub?os=installed", 200, FLATCAR_GRUB),
        # arch selects (2 selectors beat the 1 of installed.json)
        ("/ipxe?os=installed&arch=arm64", 200, FCOS_IPXE),
        # a group whose profile is missing: its machines get 404 (not the default group's
        # installer); /metadata needs only the group, as in matchbox
        ("/ipxe?os=ghost", 404, None),
        ("/ignition?os=ghost", 404, None),
        ("/metadata?os=ghost", 200,
         "A=b\nOS=ghost\nREQUEST_QUERY_OS=ghost\nREQUEST_RAW_QUERY=os=ghost\n"),
        # a Butane file: matchbox's 404, and a body saying how to transpile
        ("/ignition?os=butane", 404, None),
        ("/assets/flatcar/3227.2.0/flatcar_production_pxe.vmlinuz", 200, "KERNEL"),
        ("/assets/flatcar/nope", 404, None),
        (f"/generic?{NODE1_Q}&foo=bar", 200,
         f"name=node1\nmac={MAC}\nfoo=bar\nraw={NODE1_Q}&foo=bar\n"),
        (f"/generic?{NODE1_Q}", 200, f"name=node1\nmac={MAC}\nraw={NODE1_Q}\n"),
        # matchbox's /metadata: group metadata, selectors over it (MAC because it is one),
        # request query (empty values too) and raw query; numbers as Go prints float64;
        # lists and null left out
        (f"/metadata?{NODE1_Q}&hostname=&foo=bar", 200,
         "BIG=1e+06\nETCD_NAME=node1\n"
         f"MAC={MAC}\nNESTED_ZONE=z1\nOS=installed\nPORT=2379\n"
         f"REQUEST_QUERY_FOO=bar\nREQUEST_QUERY_HOSTNAME=\nREQUEST_QUERY_MAC={MAC}\n"
         "REQUEST_QUERY_OS=installed\n"
         f"REQUEST_RAW_QUERY={NODE1_Q}&hostname=&foo=bar\nTLS=true\n"),
    ],
)  # fmt: skip
def test_endpoints_answer_like_matchbox(
    mb: Server, path: str, status: int, body: str | None
) -> None:
    reply = mb.get(path)
    assert reply.status == status, (path, reply.text)
    if body is not None:
        assert reply.text == body


def test_butane_is_refused_with_how_to_transpile(mb: Server) -> None:
    reply = mb.get("/ignition?os=butane")
    assert reply.status == 404
    assert "worker.yaml" in reply.text
    assert "butane --strict" in reply.text


def test_empty_selector_groups(mb: Server) -> None:
    """live.json {"os": "live", "stage": ""}: stage missing or empty matches, stage=x not."""
    for query in ("os=live", "os=live&stage="):
        assert "ETCD_NAME=live\n" in mb.get(f"/metadata?{query}").text
    # stage=x: falls through to the default group, kpc's installer (403 without a MAC)
    assert mb.get("/metadata?os=live&stage=x").status == 403


def test_tie_rule_between_groups_with_as_many_selectors(mb: Server) -> None:
    """node1 {mac, os} and arm {arch, os} both match: matchbox tries the greater sorted
    "k=v,..." string first: "mac=..." > "arch=..."."""
    reply = mb.get(f"/ipxe?{NODE1_Q}&arch=arm64")
    assert reply.text == FLATCAR_IPXE


def test_ignition_go_template_rendered_and_checked(mb: Server) -> None:
    reply = mb.get(f"/ignition?{NODE1_Q}&foo=bar")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json() == {
        "ignition": {"version": "3.4.0"},
        "passwd": {
            "users": [
                {
                    "name": "core",
                    "sshAuthorizedKeys": ["ssh-ed25519 AAAA op", "ssh-ed25519 BBBB ci"],
                }
            ]
        },
        "storage": {
            "files": [
                {"path": "/etc/hostname", "mode": 420, "contents": {"source": "data:,node1"}},
                {"path": "/etc/foo", "contents": {"source": "data:,bar"}},
            ]
        },
    }
    # plain Ignition in a subdirectory, served as parsed
    arm = mb.get("/ignition?os=installed&arch=arm64")
    assert arm.status == 200 and arm.json() == {"ignition": {"version": "3.3.0"}}


def test_rendered_ignition_passes_the_real_ignition_validate(mb: Server) -> None:
    require_tool("ignition-validate")
    reply = mb.get("/ignition?role=etcd&mac=52-54-00-00-00-07")
    assert reply.status == 200, reply.text
    config = reply.json()
    unit = config["systemd"]["units"][0]["contents"]
    assert "ETCD_INITIAL_CLUSTER=etcd0=http://10.0.0.10:2380,etcd1=http://10.0.0.11:2380\n" in unit
    assert "PORT=2379\n" in unit and "MAC=52:54:00:00:00:07\n" in unit
    proc = subprocess.run(
        ["ignition-validate", "-"], input=reply.text, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # without the optional label the template still renders (index, not a field)
    assert "MAC=" not in mb.get("/ignition?role=etcd").json()["systemd"]["units"][0]["contents"]


def test_broken_files_are_reported_and_the_rest_serves(mb: Server) -> None:
    health = mb.get("/healthz")
    assert health.status == 200
    lines = health.text.splitlines()
    assert lines[0] == "ok"
    assert "groups/broken.json" in lines[1]
    assert "groups/ghost.json" in lines[1]
    assert "ignition/worker.yaml" in lines[1]
    assert "Unexpected" not in health.text  # details stay in the log and 'kpc bootcfg check'


def test_installer_only_for_machines_in_boot_mode_install(mb: Server) -> None:
    """kpc's deliberate difference: matchbox would serve the default installer to anyone."""
    assert mb.get("/ipxe").status == 403  # no mac=: installs are tracked per MAC
    assert mb.get("/ignition").status == 403


@pytest.mark.parametrize(
    "query",
    [
        "os=installed&x%0D%0AINJECTED=",  # a hostile name with an empty value
        "os=installed&%23!ipxe=",
        "os=installed&a=%24(reboot)",
        "os=installed&a=b%0D",
    ],
)
def test_hostile_queries_never_reach_metadata_or_templates(mb: Server, query: str) -> None:
    for path in ("/metadata", "/generic", "/ignition", "/ipxe", "/grub"):
        reply = mb.get(f"{path}?{query}")
        assert reply.status == 400, (path, reply.text)
        assert "\r" not in reply.text
