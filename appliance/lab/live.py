"""A live host in the lab (``kpc lab up --live-host``): the first step of a real rack.

An operator starts a deploy host by booting the Flatcar ISO and logging in as ``core`` with
their key; the lab does the same with its node OS. The live host is one more lab server
(``role: live``, named ``liveN``): a 40 GiB disk to install to, a second disk too small for
Flatcar, and in its CD drive an ISO made here from the node OS's live kernel and initramfs.
The ISO boots the product's own rescue profile (``bootcfg.setup.seed_files``: its kernel
arguments and its Ignition, the operator's public key in core's ``authorized_keys``), the
Ignition config carried on the kernel command line as a ``data:`` URL, so the host needs
nothing from the network to let the operator in. Its NIC has no boot ROM: it never PXE-boots,
so kpc's install profile can never reach it (it does not install itself). The router
reserves its address (``LabPlan.live_address``); its BMC boots it once from the CD.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

from appliance.bootcfg.setup import INITRD, KERNEL, seed_files
from appliance.config import SiteConfig
from appliance.errors import ConfigError, UsageError
from appliance.inputfile import MAX_KEYS_BYTES, read_text
from appliance.keys import AuthorizedKey, parse_authorized_keys
from appliance.lab.nodeos import NodeOs
from appliance.lab.osmedia import grub_cfg, make_iso

SMALL_DISK_GIB = 4  # under Flatcar's 8 GiB: install-host must refuse it
MEDIA_VOLUME = "KPC_LIVE"
# x86's COMMAND_LINE_SIZE is 2048 bytes; GRUB adds BOOT_IMAGE=/boot/vmlinuz and a space
MAX_KERNEL_ARGS = 2048 - 40
RESCUE_PROFILE = "profiles/rescue.json"
RESCUE_IGNITION = "ignition/rescue.ign"
KEY_HINT = "give the public key file, e.g. --operator-key ~/.ssh/id_ed25519.pub"


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


def data_url(text: str) -> str:
    """``text`` as an RFC 2397 ``data:`` URL, every byte but unreserved ones percent-encoded
    (nothing a kernel command line or GRUB's script would split or interpret)."""
    return "data:," + quote(text, safe="")


def live_kernel_args(config: SiteConfig, version: str, keys: list[AuthorizedKey]) -> str:
    """The rescue profile's kernel arguments with its Ignition inline; UsageError when they
    do not fit a kernel command line (too many or too long keys)."""
    files = seed_files(config, version, keys)
    ignition = json.dumps(json.loads(files[RESCUE_IGNITION]), separators=(",", ":"))
    profile = json.loads(files[RESCUE_PROFILE])
    args: list[str] = []
    for arg in profile["boot"]["args"]:
        if arg.startswith("initrd=") or arg == "console=tty0":
            continue  # GRUB loads the initrd itself; lab servers have no display
        if arg.startswith("ignition.config.url="):
            arg = f"ignition.config.url={data_url(ignition)}"
        args.append(arg)
    line = " ".join(args)
    if len(line) > MAX_KERNEL_ARGS:
        raise UsageError(
            f"the live host's kernel command line would be {len(line)} bytes with these "
            f"{len(keys)} keys inline; the kernel takes at most {MAX_KERNEL_ARGS}",
            hint="give a file with one key (an ed25519 key is the shortest)",
        )
    return line


def build_live_media(node_os: NodeOs, kernel_args: str, target: Path) -> Path:
    """The live host's CD: the node OS's live kernel and initramfs, booting ``kernel_args``."""
    menu = grub_cfg(kernel_args, title=f"kpc node OS {node_os.version} (live, rescue profile)")
    release = node_os.release
    return make_iso(release / KERNEL, release / INITRD, menu, MEDIA_VOLUME, target)
