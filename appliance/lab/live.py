"""A live host in the lab (``kpc lab up --live-host``): the first step of a real rack.

An operator starts a deploy host by booting the Flatcar ISO and logging in as ``core`` with
their key; the lab does the same with its node OS. The live host is one more lab server
(``role: live``, named ``liveN``): a 40 GiB disk to install to, a second disk too small for
Flatcar, and in its CD drive an ISO made here from the node OS's live kernel and initramfs.
The ISO boots the product's own rescue profile (``bootcfg.setup.seed_files``: its kernel
arguments and its Ignition, the operator's public key in core's ``authorized_keys``). The
Ignition config is embedded in the ISO the way ``coreos-installer iso ignition embed`` does
it: a second initramfs archive holding ``/usr/lib/ignition/user.ign``, which Ignition reads
when the kernel command line names no config, so the host needs nothing from the network
to let the operator in, and any number of keys fit. Its NIC has no boot ROM: it never
PXE-boots, so kpc's install profile can never reach it (it does not install itself). The
router reserves its address (``LabPlan.live_address``); its BMC boots it once from the CD.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from appliance.bootcfg.setup import INITRD, KERNEL, seed_files
from appliance.config import SiteConfig
from appliance.errors import ConfigError, UsageError
from appliance.inputfile import MAX_KEYS_BYTES, read_text
from appliance.keys import AuthorizedKey, parse_authorized_keys
from appliance.lab.nodeos import NodeOs
from appliance.lab.osimage import Entry, cpio_newc, directories_for
from appliance.lab.osmedia import EXTRA_INITRD, grub_cfg, make_iso
from appliance.render.ignition import check_ignition

SMALL_DISK_GIB = 4  # under Flatcar's 8 GiB: install-host must refuse it
MEDIA_VOLUME = "KPC_LIVE"
RESCUE_PROFILE = "profiles/rescue.json"
RESCUE_IGNITION = "ignition/rescue.ign"
USER_IGN = "usr/lib/ignition/user.ign"  # Ignition's own place for an embedded config
KEY_HINT = "give the public key file, e.g. --operator-key ~/.ssh/id_ed25519.pub"
# systemd gives all generators together 90 s, then freezes (no SSH ever comes); on a busy
# TCG host the live root (a squashfs in RAM, zstd) made twelve of them miss that, twice. The
# lab's live host runs only the two it needs (fstab; getty for the console autologin), by
# systemd's own switch: a link to /dev/null in /etc/systemd/system-generators.
UNNEEDED_GENERATORS = (
    "selinux-autorelabel-generator.sh",
    "systemd-debug-generator",
    "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator",
    "systemd-rc-local-generator",
    "systemd-run-generator",
    "systemd-ssh-generator",
    "systemd-system-update-generator",
    "systemd-sysv-generator",
    "systemd-tpm2-generator",
)


def read_operator_key(path: Path) -> list[AuthorizedKey]:
    """The public keys in ``path`` (a .pub or authorized_keys file); UsageError naming the
    file and what is wrong: missing, not a regular file, a private key, no usable key."""
    where = f"--operator-key {path}"
    try:
        text = read_text(path, what="SSH public key file", limit=MAX_KEYS_BYTES, lenient=True)
    except FileNotFoundError:
        raise UsageError(f"{where}: no such file", hint=KEY_HINT) from None
    except ConfigError as exc:
        raise UsageError(f"{where}: {exc.message}", hint=KEY_HINT) from None
    if "PRIVATE KEY-----" in text:  # never echoed: only that it is one
        raise UsageError(
            f"{where}: this is a private key; the live host needs only the public half",
            hint=f"give {path}.pub (a private key never leaves your machine)",
        )
    result = parse_authorized_keys(text, str(path))
    if not result.keys:
        detail = "; ".join(str(p) for p in result.problems[:3]) or "the file is empty"
        raise UsageError(f"{where}: holds no usable SSH public key ({detail})", hint=KEY_HINT)
    return result.keys


def live_ignition(config: SiteConfig, version: str, keys: list[AuthorizedKey]) -> str:
    """The rescue profile's Ignition (core's keys) plus the lab's generator switches."""
    ignition: dict[str, Any] = json.loads(seed_files(config, version, keys)[RESCUE_IGNITION])
    links = [
        {"path": f"/etc/systemd/system-generators/{name}", "target": "/dev/null"}
        for name in UNNEEDED_GENERATORS
    ]
    ignition.setdefault("storage", {}).setdefault("links", []).extend(links)
    problems = check_ignition(ignition)
    assert not problems, problems
    return json.dumps(ignition, indent=2) + "\n"


def live_kernel_args(config: SiteConfig, version: str) -> str:
    """The rescue profile's kernel arguments, less what a CD does not need: the initrd and
    the config URL (bootcfg's; the CD carries its config) and tty0 (no display here)."""
    profile = json.loads(seed_files(config, version, [])[RESCUE_PROFILE])
    dropped = ("initrd=", "ignition.config.url=", "console=tty0")
    return " ".join(a for a in profile["boot"]["args"] if not a.startswith(dropped))


def ignition_archive(ignition: str) -> bytes:
    """The initramfs archive that puts ``ignition`` where Ignition looks for an embedded
    config (after the node OS's own archive, it replaces the link there)."""
    user = Entry(USER_IGN, 0o100600, ignition.encode())
    return cpio_newc([*directories_for([USER_IGN]), user])


def build_live_media(node_os: NodeOs, kernel_args: str, ignition: str, target: Path) -> Path:
    """The live host's CD: the node OS's live kernel and initramfs, booting ``kernel_args``
    with ``ignition`` embedded."""
    menu = grub_cfg(
        kernel_args,
        title=f"kpc node OS {node_os.version} (live, rescue profile)",
        initrds=("/boot/initrd.gz", f"/boot/{EXTRA_INITRD}"),
    )
    release = node_os.release
    extra = ignition_archive(ignition)
    return make_iso(release / KERNEL, release / INITRD, menu, MEDIA_VOLUME, target, extra)
