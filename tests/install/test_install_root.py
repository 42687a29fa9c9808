"""kpc install-host for real, as root: loop devices as disks, a stand-in installer.

The stand-in (stand_in_installer.sh) partitions the loop device and makes an ext4 filesystem
labelled ROOT, so finding, mounting and copying onto the new root runs for real.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from appliance.cli.main import app
from appliance.config import parse_config
from appliance.install import flow
from tests.conftest import REPO, missing, require_root, require_tool, wait_for
from tests.install.conftest import DISK_SIZE, Loop, mounts_of, sh

HERE = Path(__file__).parent
STAND_IN = HERE / "stand_in_installer.sh"
OS_TREE = HERE / "fixtures" / "os" / "flatcar-beta"


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    """A site config, kpc's resource directories, an SSH key, a HOME, a record dir."""
    require_tool("ssh-keygen")
    source = tmp_path / "source"
    shutil.copytree(REPO / "ignition", source / "ignition")
    for kind in ("containers", "kolla", "compose"):
        (source / kind / "sub").mkdir(parents=True)
        (source / kind / "sub" / f"{kind}.txt").write_text(f"{kind} definition\n")
    config = tmp_path / "etc" / "kpc.yaml"
    config.parent.mkdir()
    config.write_text(
        "provisioning: {interface: kpcE0, address: 198.18.0.1, subnet: 198.18.0.0/24}\n"
        f"paths: {{source_dir: {source}}}\n"
    )
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    key = home / ".ssh" / "id_ed25519"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "operator@kpcE", "-f", str(key))
    shutil.copy(key.with_suffix(".pub"), home / ".ssh" / "authorized_keys")
    record = tmp_path / "record"
    record.mkdir()
    return {
        "config": config,
        "source": source,
        "home": home,
        "pub": key.with_suffix(".pub"),
        "record": record,
        "work": tmp_path / "run" / "install-host",
    }


def _args(site: dict[str, Path], mode: str = "ok", *extra: str) -> list[str]:
    return [
        "--config",
        str(site["config"]),
        "install-host",
        "--installer",
        f"{STAND_IN} {site['record']} {mode}",
        "--work-dir",
        str(site["work"]),
        "--os-root",
        str(OS_TREE),
        *extra,
    ]


def _invoke(site: dict[str, Path], *args: str, input: str | None = None) -> tuple[int, str]:
    env = {"HOME": str(site["home"]), "SUDO_USER": "", "SSH_CONNECTION": "", "COLUMNS": "200"}
    result = CliRunner().invoke(app, list(args), input=input, env=env)
    return result.exit_code, result.output


def _nothing_left(site: dict[str, Path], loop: Loop) -> None:
    assert mounts_of(loop.device) == []
    assert mounts_of(str(site["work"].parent)) == []
    assert not site["work"].exists(), f"work directory {site['work']} was left behind"


def test_interactive_install_copies_kpc_files_onto_the_new_root(
    loops: Callable[..., Loop], site: dict[str, Path], tmp_path: Path
) -> None:
    loop = loops()
    code, out = _invoke(site, *_args(site), input=f"{loop.name}\n{loop.name}\n")
    assert code == 0, out

    argv = (site["record"] / "argv").read_text().split("\n")[:-1]
    ignition = site["work"] / "deployhost.ign"
    assert argv == ["-d", loop.device, "-C", "beta", "-V", "3850.1.0", "-i", str(ignition)]
    rendered = json.loads((site["record"] / "ignition.json").read_text())
    pub = site["pub"].read_text().strip()
    assert rendered["passwd"]["users"][0]["sshAuthorizedKeys"] == [pub]
    assert "stand-in installer: done" in out
    assert "kpc images build" in out and "kpc up" in out
    _nothing_left(site, loop)

    # Look at the new root ourselves.
    part = f"{loop.device}p2"
    assert sh("blkid", "-p", "-s", "LABEL", "-o", "value", part).stdout.strip() == "ROOT"
    check = tmp_path / "check"
    check.mkdir()
    sh("mount", "-o", "ro", part, str(check))
    try:
        kpc = check / "etc" / "kpc"
        assert (kpc / "kpc.yaml").read_text() == site["config"].read_text()
        assert (kpc / "ignition" / "deployhost.ign.j2").is_file()
        for kind in ("containers", "kolla", "compose"):
            assert (kpc / kind / "sub" / f"{kind}.txt").read_text() == f"{kind} definition\n"
    finally:
        sh("umount", str(check))


def test_dry_run_prints_the_exact_command_and_writes_nothing(
    loops: Callable[..., Loop], site: dict[str, Path]
) -> None:
    loop = loops()
    before = loop.digest()
    code, out = _invoke(site, *_args(site, "ok", "--device", loop.device, "--dry-run"))
    assert code == 0, out
    ignition = site["work"] / "deployhost.ign"
    command = f"{STAND_IN} {site['record']} ok -d {loop.device} -C beta -V 3850.1.0 -i {ignition}"
    assert f"would run: {command}" in out
    assert "Dry run finished: nothing was written." in out
    assert not (site["record"] / "argv").exists()
    assert loop.digest() == before
    _nothing_left(site, loop)


def test_a_by_id_style_link_is_resolved_to_the_device(
    loops: Callable[..., Loop], site: dict[str, Path], tmp_path: Path
) -> None:
    loop = loops()
    link = tmp_path / "by-id" / "usb-Example_Disk-0:0"
    link.parent.mkdir()
    link.symlink_to(loop.device)
    code, out = _invoke(site, *_args(site, "ok", "--device", str(link), "--dry-run"))
    assert code == 0, out
    assert f"Dry run: {loop.device} would be erased" in out
    assert f"would ask you to type {loop.name} to confirm" in out


def test_wrong_name_at_the_prompt_aborts_and_touches_nothing(
    loops: Callable[..., Loop], site: dict[str, Path]
) -> None:
    loop = loops()
    before = loop.digest()
    code, out = _invoke(site, *_args(site, "ok", "--device", loop.device), input="sda\n")
    assert code == 3, out
    assert f"you typed 'sda', not {loop.name}: nothing was written" in out
    assert not (site["record"] / "argv").exists()
    assert loop.digest() == before
    _nothing_left(site, loop)
    # end of input at the prompt is a "no" too
    code, out = _invoke(site, *_args(site, "ok", "--device", loop.device), input="")
    assert code == 3 and "nothing was written" in out
    assert loop.digest() == before


def _refused(site: dict[str, Path], device: str, loop: Loop | None = None) -> str:
    before = loop.digest() if loop else None
    # "fail" mode never writes: even if a refusal regressed, no disk would be touched
    code, out = _invoke(site, *_args(site, "fail", "--device", device, "--yes"))
    assert code == 4, out
    assert f"refusing to install to {device}" in out
    assert not (site["record"] / "argv").exists(), "the installer ran"
    if loop is not None:
        assert loop.digest() == before
        _nothing_left(site, loop)
    return out


def test_refuses_a_partition(loops: Callable[..., Loop], site: dict[str, Path]) -> None:
    loop = loops()
    subprocess.run(
        ["sfdisk", "--quiet", loop.device], input="label: gpt\n,,L\n", text=True, check=True
    )
    sh("partprobe", loop.device)
    wait_for(lambda: Path(f"{loop.device}p1").exists(), 10, f"{loop.device}p1 to appear")
    out = _refused(site, f"{loop.device}p1", loop)
    assert f"is a partition of /dev/{loop.name}; kpc installs to a whole disk" in out


def test_refuses_a_mounted_device(
    loops: Callable[..., Loop], site: dict[str, Path], tmp_path: Path
) -> None:
    loop = loops()
    sh("mkfs.ext4", "-q", "-F", loop.device)
    point = tmp_path / "busy"
    point.mkdir()
    sh("mount", "-o", "ro,noload", loop.device, str(point))  # read-only: the digest holds
    try:
        before = loop.digest()
        code, out = _invoke(site, *_args(site, "fail", "--device", loop.device, "--yes"))
        assert code == 4, out
        assert f"has a mounted filesystem ({loop.name} on {point})" in out
        assert not (site["record"] / "argv").exists()
    finally:
        sh("umount", str(point))
    assert loop.digest() == before


def test_refuses_a_read_only_device(loops: Callable[..., Loop], site: dict[str, Path]) -> None:
    loop = loops(read_only=True)
    out = _refused(site, loop.device, loop)
    assert "is read-only" in out


def test_refuses_the_device_of_root(site: dict[str, Path]) -> None:
    require_root()
    source = sh("findmnt", "-n", "-o", "SOURCE", "--target", "/").stdout.strip()
    assert source.startswith("/dev/"), f"/ is not on a block device here ({source})"
    disk = sh("lsblk", "-n", "-d", "-o", "PKNAME", source).stdout.strip()
    device = f"/dev/{disk}" if disk else source
    out = _refused(site, device)
    assert "holds the running system (/ is mounted from" in out


def test_installer_failure_is_reported_and_cleaned_up(
    loops: Callable[..., Loop], site: dict[str, Path]
) -> None:
    loop = loops()
    code, out = _invoke(site, *_args(site, "fail", "--device", loop.device, "--yes"))
    assert code == 1, out
    assert "the installer failed with exit code 3" in out
    assert "error: simulated download failure" in out
    assert "Nothing is left mounted" in out
    _nothing_left(site, loop)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_installer_is_stopped_and_cleaned_up(
    loops: Callable[..., Loop], site: dict[str, Path], signum: int
) -> None:
    loop = loops()
    argv = [
        sys.executable,
        "-m",
        "appliance",
        *_args(site, "hang", "--device", loop.device, "--yes"),
    ]
    env = {**os.environ, "HOME": str(site["home"]), "SSH_CONNECTION": ""}
    # started with SIGINT ignored, as a background job of a script is (CI runners do that):
    # kpc must still stop on it
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, cwd=REPO, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        wait_for(lambda: (site["record"] / "started").exists() or proc.poll() is not None,
                 60, "the stand-in installer to start")  # fmt: skip
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pid_file = site["record"] / "pid"
        if pid_file.exists() and Path(f"/proc/{pid_file.read_text().strip()}").exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)  # a stand-in kpc did not stop
    assert proc.returncode == 130, out + err
    assert f"interrupted while the installer was writing {loop.device}" in err
    _nothing_left(site, loop)
    pid = int((site["record"] / "pid").read_text())
    assert not Path(f"/proc/{pid}").exists(), "the installer process was left behind"


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """kpc's resource files as a development checkout would hold them (the fallback used when
    the site config's paths.source_dir, /etc/kpc by default, has none)."""
    fake = tmp_path / "checkout"
    shutil.copytree(REPO / "ignition", fake / "ignition")
    for kind in ("containers", "kolla", "compose"):
        (fake / kind).mkdir()
        (fake / kind / "README").write_text(f"{kind}\n")
    monkeypatch.setattr("appliance.resources.CHECKOUT", fake)
    return fake


def _host_address() -> str:
    from appliance.install.address import host_addresses

    found = host_addresses()
    if not found:
        missing("this host has no global IPv4 address")
    return str(found[0].address)


def test_without_a_site_config_one_is_written_for_the_ssh_address(
    loops: Callable[..., Loop], site: dict[str, Path], checkout: Path, tmp_path: Path
) -> None:
    loop = loops()
    address = _host_address()
    config = tmp_path / "new" / "kpc.yaml"
    args = _args(site, "ok", "--device", loop.device, "--yes")
    args[1] = str(config)
    env = {"HOME": str(site["home"]), "SSH_CONNECTION": f"192.0.2.250 40000 {address} 22"}
    result = CliRunner().invoke(app, args, env={**env, "SUDO_USER": "", "COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "the address your SSH session reached" in result.output
    written = parse_config(config.read_text(), str(config))
    assert str(written.provisioning.address) == address
    assert (written.os.channel, written.os.version) == ("beta", "3850.1.0")
    _nothing_left(site, loop)

    check = tmp_path / "check"
    check.mkdir()
    sh("mount", "-o", "ro", f"{loop.device}p2", str(check))
    try:
        kpc = check / "etc" / "kpc"
        assert (kpc / "kpc.yaml").read_text() == config.read_text()
        assert (kpc / "kolla" / "README").read_text() == "kolla\n"
    finally:
        sh("umount", str(check))


def test_dry_run_without_config_asks_for_the_address_and_writes_nothing(
    loops: Callable[..., Loop], site: dict[str, Path], checkout: Path, tmp_path: Path
) -> None:
    loop = loops()
    address = _host_address()
    config = tmp_path / "new" / "kpc.yaml"
    args = _args(site, "ok", "--device", loop.device, "--dry-run")
    args[1] = str(config)
    code, out = _invoke(site, *args, input=f"{address}\n")
    assert code == 0, out
    assert "SSH_CONNECTION is not set" in out
    assert f"would write the site config {config}" in out
    assert f"address: {address}" in out
    assert not config.exists() and not config.parent.exists()
    # an answer that is not in the list stops the run
    code, out = _invoke(site, *args, input="999\n")
    assert code == 3 and "'999' is not one of the listed addresses" in out


class ScriptedUi:
    """The flow's operator, scripted: answers with the device name, after ``meanwhile()``."""

    def __init__(self, meanwhile: Callable[[], None]) -> None:
        self.meanwhile = meanwhile
        self.lines: list[str] = []

    def step(self, text: str) -> None:
        self.lines.append(text)

    detail = warn = installer_line = step

    def choose_address(self, candidates: Any, note: str) -> Any:
        raise AssertionError("the site config exists; no address question expected")

    def show_keys(self, keys: Any) -> None: ...

    def show_disks(self, verdicts: Any) -> None: ...

    def choose_disk(self, verdicts: Any) -> str:
        raise AssertionError("--device was given")

    def ask_device_name(self, device: Any) -> str:
        self.meanwhile()
        return str(device.name)


def test_the_disk_is_judged_again_after_the_confirmation(
    loops: Callable[..., Loop], site: dict[str, Path], tmp_path: Path
) -> None:
    loop = loops()
    sh("mkfs.ext4", "-q", "-F", loop.device)
    point = tmp_path / "late"
    point.mkdir()
    ui = ScriptedUi(lambda: sh("mount", "-o", "ro,noload", loop.device, str(point)) and None)
    request = flow.Request(
        config_path=site["config"],
        installer=(str(STAND_IN), str(site["record"]), "ok"),
        authorized_keys=site["home"] / ".ssh" / "authorized_keys",
        device=loop.device,
        os_root=OS_TREE,
        work_dir=site["work"],
    )
    try:
        with pytest.raises(flow.UnsafeDevice) as info:
            flow.run(request, ui)
    finally:
        sh("umount", str(point), check=False)
    assert f"has a mounted filesystem ({loop.name} on {point})" in info.value.message
    assert "the device changed since it was chosen" in (info.value.hint or "")
    assert not (site["record"] / "argv").exists()
    _nothing_left(site, loop)


def test_yes_without_device_never_picks_a_disk(site: dict[str, Path]) -> None:
    code, out = _invoke(site, *_args(site, "ok", "--yes"))
    assert code == 2, out
    assert "--yes needs --device: kpc never picks a disk to erase by itself" in out
    assert not (site["record"] / "argv").exists()


def test_no_config_on_a_host_that_is_not_flatcar(site: dict[str, Path], tmp_path: Path) -> None:
    args = _args(site, "ok", "--dry-run")
    args[1] = str(tmp_path / "absent.yaml")
    args[args.index("--os-root") + 1] = str(HERE / "fixtures" / "os" / "debian")
    code, out = _invoke(site, *args)
    assert code == 2, out
    assert "cannot tell which release channel this host follows (Debian GNU/Linux 12" in out
    assert "(kpc config init), set os.channel and os.version there" in out
    assert not (tmp_path / "absent.yaml").exists()


def test_no_ssh_key_is_an_error(site: dict[str, Path]) -> None:
    (site["home"] / ".ssh" / "authorized_keys").unlink()
    code, out = _invoke(site, *_args(site, "ok", "--dry-run", "--device", "/dev/null"))
    assert code == 1, out
    assert "no SSH public keys found: nobody could log in to the installed deploy host" in out


def _request(site: dict[str, Path], device: str, mode: str = "ok", **extra: Any) -> flow.Request:
    return flow.Request(
        config_path=site["config"],
        installer=(str(STAND_IN), str(site["record"]), mode),
        authorized_keys=site["home"] / ".ssh" / "authorized_keys",
        device=device,
        os_root=OS_TREE,
        work_dir=site["work"],
        **extra,
    )


def test_a_disk_swapped_for_another_after_the_confirmation_is_refused(
    loops: Callable[..., Loop], site: dict[str, Path], tmp_path: Path
) -> None:
    # The operator confirmed loopN (8 GiB); meanwhile loopN is re-attached to another image,
    # as when a hot-swap bay is reused: same device name, different disk.
    loop = loops()
    other = tmp_path / "other.img"
    with other.open("wb") as f:
        f.truncate(DISK_SIZE + (1 << 30))

    def swap() -> None:
        sh("losetup", "--detach", loop.device)
        sh("losetup", "--partscan", loop.device, str(other))

    try:
        with pytest.raises(flow.UnsafeDevice) as info:
            flow.run(_request(site, loop.device), ScriptedUi(swap))
    finally:
        sh("losetup", "--detach", loop.device, check=False)
        sh("losetup", loop.device, str(loop.image))  # the fixture detaches its own image
    assert info.value.message == (
        f"refusing to install to {loop.device}: "
        "is no longer the disk that was chosen (size, model or serial)"
    )
    assert "nothing was written" in (info.value.hint or "")
    assert not (site["record"] / "argv").exists(), "the installer ran"
    assert other.stat().st_blocks == 0, "the replacement disk was written"
    _nothing_left(site, loop)


def test_a_disk_that_disappears_after_the_confirmation_is_refused(
    loops: Callable[..., Loop], site: dict[str, Path]
) -> None:
    loop = loops()
    ui = ScriptedUi(lambda: sh("losetup", "--detach", loop.device) and None)
    try:
        with pytest.raises(flow.UnsafeDevice) as info:
            flow.run(_request(site, loop.device), ui)
    finally:
        sh("losetup", loop.device, str(loop.image), check=False)
    assert f"refusing to install to {loop.device}: " in info.value.message
    assert not (site["record"] / "argv").exists(), "the installer ran"


def test_a_disk_too_small_for_flatcar_is_refused(
    loops: Callable[..., Loop], site: dict[str, Path]
) -> None:
    loop = loops(size=4 << 30)
    out = _refused(site, loop.device, loop)
    assert "is too small (4.0G): Flatcar needs a disk of at least 8 GiB" in out


def test_installer_success_without_a_root_partition_says_what_it_found(
    loops: Callable[..., Loop], site: dict[str, Path]
) -> None:
    loop = loops()
    code, out = _invoke(site, *_args(site, "noroot", "--device", loop.device, "--yes"))
    assert code == 1, out
    assert "stand-in installer: done" in out
    assert (
        f"no partition labelled ROOT on {loop.device} after the installer finished "
        f"({loop.name}p1=-, {loop.name}p2=OEM)" in out
    )
    assert "kpc's files are not on it" in out
    _nothing_left(site, loop)


def test_a_root_filesystem_that_cannot_be_written_is_reported_and_unmounted(
    loops: Callable[..., Loop], site: dict[str, Path]
) -> None:
    require_tool("tune2fs")
    loop = loops()
    code, out = _invoke(site, *_args(site, "readonly", "--device", loop.device, "--yes"))
    assert code == 1, out
    assert "cannot copy kpc's files to the new system: " in out
    assert "Read-only file system" in out
    assert "is the new root filesystem full or read-only?" in out
    _nothing_left(site, loop)


def test_kpcs_own_executable_is_installed_to_opt_bin(
    loops: Callable[..., Loop], site: dict[str, Path], tmp_path: Path
) -> None:
    loop = loops()
    executable = tmp_path / "kpc-x86_64"
    executable.write_bytes(b"#!/bin/sh\necho kpc stand-in\n")
    request = _request(site, loop.device, executable=executable, yes=True)
    outcome = flow.run(request, ScriptedUi(lambda: None))
    assert Path("opt/bin/kpc") in outcome.copied
    _nothing_left(site, loop)
    check = tmp_path / "check"
    check.mkdir()
    sh("mount", "-o", "ro", f"{loop.device}p2", str(check))
    try:
        installed = check / "opt" / "bin" / "kpc"
        assert installed.read_bytes() == executable.read_bytes()
        assert installed.stat().st_mode & 0o777 == 0o755
    finally:
        sh("umount", str(check))


def test_keys_ignition_wrote_to_authorized_keys_d_are_collected(site: dict[str, Path]) -> None:
    # A live Flatcar booted with an Ignition config: its Ignition wrote the operator's key to
    # ~/.ssh/authorized_keys.d/ignition, and there may be no authorized_keys at all.
    ssh = site["home"] / ".ssh"
    (ssh / "authorized_keys").unlink()
    (ssh / "authorized_keys.d").mkdir()
    shutil.copy(site["pub"], ssh / "authorized_keys.d" / "ignition")
    code, out = _invoke(site, *_args(site, "ok", "--dry-run", "--device", "/dev/null"))
    assert f"{ssh / 'authorized_keys.d' / 'ignition'}: 1 key" in out, out
    assert "operator@kpcE" in out
    assert code == 4 and "refusing to install to /dev/null" in out  # past the keys, to the disk
