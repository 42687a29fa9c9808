"""``kpc lab up --live-host``: its plan, its CD, its Ignition and its refusals, without a VM.

The live host itself boots in tests/install/test_live_flatcar.py (marked full: ~40 min).
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import pytest

from appliance.bmc import ipmi_jobs
from appliance.bmc.actions import BootDevice
from appliance.bmc.qemu_backend import QemuBackend
from appliance.config import parse_config
from appliance.errors import KpcError, UsageError
from appliance.keys import parse_authorized_keys
from appliance.lab import render
from appliance.lab.live import (
    UNNEEDED_GENERATORS,
    ignition_archive,
    live_ignition,
    live_kernel_args,
    read_operator_key,
)
from appliance.lab.osmedia import grub_cfg, make_iso
from appliance.lab.plan import make_plan, plan_from_dict, plan_to_dict
from appliance.lab.state import LabState, save_state
from appliance.lab.up import UpRequest, lab_up
from appliance.lab.vmspec import load_spec, media_file, qemu_argv, spec_to_json
from tests.conftest import require_tool
from tests.lab.conftest import kpc
from tests.lab.test_pure import _site_config, _spec

KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl operator@site"
)
NODE_VERSION = "9999.0.1"


@pytest.fixture
def pub(tmp_path: Path) -> Path:
    path = tmp_path / "id_ed25519.pub"
    path.write_text(KEY + "\n")
    return path


def test_plan_has_the_live_host_last_with_its_own_name_and_address() -> None:
    plan = make_plan(2, "bios", live_host_memory_mib=3072, network=13)
    assert [(s.name, s.role) for s in plan.servers] == [
        ("server1", "node"),
        ("server2", "node"),
        ("live3", "live"),
    ]
    live = plan.live_hosts[0]
    assert plan.nodes == plan.servers[:2]
    assert live.memory_mib == 3072 and plan.servers[0].memory_mib == 256
    assert str(plan.live_address(live)) == "198.18.26.23"  # below DHCP's .100-.199
    assert plan.server("live3") is live
    assert plan_from_dict(json.loads(json.dumps(plan_to_dict(plan)))) == plan
    alone = make_plan(0, "bios", live_host_memory_mib=3072)
    assert [s.name for s in alone.servers] == ["live1"] and alone.nodes == ()


@pytest.mark.parametrize(
    ("nodes", "live", "message"),
    [
        (0, None, "--nodes must be between 1 and 64 (got 0)"),
        (64, 3072, "--nodes must be between 0 and 63 (got 64) with --live-host"),
        (1, 64, "--memory must be between 192"),
    ],
)
def test_plan_refuses_a_live_host_that_cannot_work(nodes: int, live: int, message: str) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        make_plan(nodes, "bios", live_host_memory_mib=live)


def test_router_reserves_its_address_and_the_site_config_leaves_its_bmc_out(
    tmp_path: Path,
) -> None:
    plan = make_plan(1, "bios", live_host_memory_mib=3072)
    argv = render.router_argv(plan, tmp_path / "leases", tmp_path / "log")
    assert "--dhcp-host=52:54:00:c6:12:02,198.18.0.22" in argv
    text = _site_config(plan, tmp_path)
    config = parse_config(text, "lab.yaml")
    # pxe-all and friends act on the nodes; the live host is the deploy host to be
    assert [h.name for h in config.bmc.hosts] == ["52:54:00:c6:12:01"]
    assert "compute" in config.kolla.roles.first_groups  # one node holds every role


def test_live_vm_never_boots_from_the_network_and_has_its_small_disk(tmp_path: Path) -> None:
    spec = dataclasses.replace(
        _spec(tmp_path, "bios"),
        name="live1",
        memory_mib=3072,
        ovmf_code=None,
        ovmf_vars_template=None,
        ovmf_vars=None,
        extra_disks=(tmp_path / "small.qcow2",),
        pxe=False,
    )
    (tmp_path / "vm.json").write_text(spec_to_json(spec))
    assert load_spec(tmp_path / "vm.json") == spec
    argv = " ".join(qemu_argv(spec, network_first=True))  # even a one-time PXE: no ROM
    assert "mac=52:54:00:c6:12:01,bootindex=0,romfile=" in argv
    assert f"file={tmp_path / 'small.qcow2'},format=qcow2,if=none,id=disk1" in argv
    assert "virtio-blk-pci,drive=disk1,id=disk1 " in argv  # no bootindex: never booted
    node_spec = dataclasses.replace(spec, pxe=True, extra_disks=())
    node = " ".join(qemu_argv(node_spec, network_first=False))
    assert "romfile" not in node and "disk1" not in node
    # a CD already in the drive when the BMC starts (kpc lab up put it there) is in it
    media_file(spec).write_bytes(b"iso")
    backend = QemuBackend(spec)
    assert backend._media == media_file(spec)


def test_ipmi_can_boot_the_cd_once() -> None:
    command = ipmi_jobs.set_boot_device(BootDevice.CD, persistent=False)
    # IPMI 2.0 table 28-14, boot flags: valid, one-time; device selector 0101b (CD/DVD)
    assert command.data[:3] == bytes((5, 0x80, 0x05 << 2))


def test_operator_key_refusals_name_the_file_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pub"
    with pytest.raises(UsageError, match=f"--operator-key {missing}: no such file") as exc:
        read_operator_key(missing)
    assert "id_ed25519.pub" in (exc.value.hint or "")

    private = tmp_path / "id_ed25519"
    secret = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
    private.write_text(
        f"-----BEGIN OPENSSH PRIVATE KEY-----\n{secret}\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    with pytest.raises(UsageError, match="this is a private key") as exc:
        read_operator_key(private)
    assert f"{private}.pub" in (exc.value.hint or "")
    assert secret not in exc.value.message + (exc.value.hint or "")  # never echoed

    empty = tmp_path / "empty.pub"
    empty.write_text("\n# nothing\n")
    with pytest.raises(UsageError, match=r"holds no usable SSH public key \(the file is empty\)"):
        read_operator_key(empty)
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("ssh-ed25519 not-base64\n")
    with pytest.raises(UsageError, match=f"{garbage}:1: "):
        read_operator_key(garbage)
    with pytest.raises(UsageError, match="is a directory, not a file"):
        read_operator_key(tmp_path)

    good = tmp_path / "good.pub"
    good.write_text(KEY + "\n")
    assert [k.line for k in read_operator_key(good)] == [KEY]


def _config(tmp_path: Path) -> str:
    return (
        "provisioning: {interface: eth0, address: 198.18.0.2, subnet: 198.18.0.0/24}\n"
        f"os: {{version: {NODE_VERSION}}}\n"
        f"paths: {{state_dir: {tmp_path / 'state'}}}\n"
    )


def test_kernel_args_are_the_rescue_profile_without_bootcfg(tmp_path: Path) -> None:
    config = parse_config(_config(tmp_path), "lab.yaml")
    args = live_kernel_args(config, NODE_VERSION).split(" ")
    assert args == ["flatcar.first_boot=yes", "flatcar.autologin", "console=ttyS0,115200n8"]


def test_ignition_is_the_rescue_config_with_the_operators_key(tmp_path: Path) -> None:
    config = parse_config(_config(tmp_path), "lab.yaml")
    keys = parse_authorized_keys(KEY).keys
    ignition = live_ignition(config, NODE_VERSION, keys)
    parsed = json.loads(ignition)
    assert parsed["passwd"]["users"] == [{"name": "core", "sshAuthorizedKeys": [KEY]}]
    masked = {link["path"].rsplit("/", 1)[1] for link in parsed["storage"]["links"]}
    assert masked == set(UNNEEDED_GENERATORS)
    assert {link["target"] for link in parsed["storage"]["links"]} == {"/dev/null"}
    require_tool("ignition-validate")  # Ignition's own validator accepts it
    checked = subprocess.run(
        ["ignition-validate", "-"], input=ignition, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # embedded as coreos-installer does it: an archive the kernel unpacks after the OS's own
    require_tool("cpio")
    archive = tmp_path / "extra.img"
    archive.write_bytes(ignition_archive(ignition))
    out = tmp_path / "unpacked"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet", "-F", str(archive)], cwd=out, check=True)
    user = out / "usr" / "lib" / "ignition" / "user.ign"
    assert user.read_text() == ignition and user.stat().st_mode & 0o777 == 0o600


def test_live_cd_boots_the_rescue_profile_from_grub(tmp_path: Path) -> None:
    require_tool("grub-mkrescue", "xorriso", "mformat")
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd"
    kernel.write_bytes(b"kernel")
    initrd.write_bytes(b"initrd")
    menu = grub_cfg("a=1 b=2", title="live", initrds=("/boot/initrd.gz", "/boot/extra.img"))
    iso = make_iso(kernel, initrd, menu, "KPC_LIVE", tmp_path / "x.iso", extra=b"extra")
    for name, want in (("grub/grub.cfg", None), ("extra.img", b"extra")):
        out = tmp_path / name.replace("/", "-")
        subprocess.run(
            ["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", f"/boot/{name}",
             str(out)],
            check=True, capture_output=True,
        )  # fmt: skip
        if want is not None:
            assert out.read_bytes() == want
    cfg = (tmp_path / "grub-grub.cfg").read_text()
    assert "linux /boot/vmlinuz a=1 b=2\n  initrd /boot/initrd.gz /boot/extra.img\n" in cfg
    label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(iso)], capture_output=True)
    assert label.stdout.strip() == b"KPC_LIVE"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["extra.img", "grub-grub.cfg", "initrd", "vmlinuz", "x.iso"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--live-host"], "--live-host boots the node OS"),
        (["--live-host", "--os", "node"], "--live-host needs --operator-key"),
        (["--operator-key", "KEY"], "--operator-key is the live host's key, and there is no"),
        (["--live-host", "--os", "node", "--operator-key", "MISSING"], "MISSING: no such file"),
    ],
)
def test_kpc_lab_up_refuses_a_live_host_it_cannot_make(
    tmp_path: Path, pub: Path, extra: list[str], message: str
) -> None:
    """Before anything is made (and before it needs root)."""
    args = [a.replace("KEY", str(pub)).replace("MISSING", str(tmp_path / "x.pub")) for a in extra]
    where = tmp_path / "lab"
    result = kpc(["lab", "up", "--nodes", "0", "--dir", str(where), *args])
    assert result.code == 2, result.output
    assert message.replace("MISSING", str(tmp_path / "x.pub")) in " ".join(result.output.split())
    assert not where.exists()


def test_a_live_host_is_refused_where_a_lab_without_one_is_up(tmp_path: Path, pub: Path) -> None:
    where = tmp_path / "lab"
    where.mkdir()
    save_state(LabState(directory=where, plan=make_plan(1, "bios"), phase="up", firmware="bios"))
    request = UpRequest(
        directory=where, nodes=1, firmware="bios", os="node", live_host=True, operator_key=pub
    )
    with pytest.raises(KpcError, match=f"a different lab is already up in {where}: 1 servers"):
        lab_up(request, lambda _: None, lambda _: None)
