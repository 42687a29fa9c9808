"""One lab server's QEMU definition (the ``vm.json`` a simulated BMC is given) and the QEMU
command line it stands for. Pure: no files are read here except by ``load_spec``.

Boot order is the one the original instructions require of real servers: the disk first
(bootindex 1), then the network (bootindex 2), then the CD drive (bootindex 3: the BMC's
virtual media, empty until something is inserted). A one-time network or CD boot moves that
device to bootindex 0 for one start. Every reset, the guest's own or the BMC's, is a new
QEMU process (``-action reboot=shutdown``; the BMC restarts it), so the firmware starts as
from power on, with the same disk and UEFI variables.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal

from appliance.errors import ConfigError
from appliance.inputfile import MAX_STATE_BYTES, read_text

DISK_BOOTINDEX = 1
NIC_BOOTINDEX = 2
PXE_FIRST_BOOTINDEX = 0
NIC_ID = "nic0"
NIC_QOM_PATH = f"/machine/peripheral/{NIC_ID}"
CD_BOOTINDEX = 3
CD_ID = "cd0"  # the drive's device; QMP blockdev-change-medium / eject name it by this id
CD_QOM_PATH = f"/machine/peripheral/{CD_ID}"
MEDIA_SUFFIX = ".media.iso"
# MiB of QEMU's buffer of translated guest code under TCG. QEMU's default is 1 GiB per VM
# and a booting systemd/Docker OS touches all of it (it fills, is flushed, fills again), so
# a node-OS server at 1 GiB of RAM held 2.2 GiB resident; at 256 MiB the buffer no longer
# dominates (docs/benchmarks.md, the virtual lab).
TCG_TB_SIZE_MIB = 256
Accel = Literal["tcg", "kvm"]


@dataclass(frozen=True)
class VmSpec:
    name: str
    firmware: Literal["bios", "uefi"]
    memory_mib: int
    mac: str
    netns: str | None  # where the tap lives; QEMU runs there (ip netns exec)
    tap: str
    disk: Path
    serial_log: Path
    qmp_socket: Path
    qemu_log: Path
    ovmf_code: Path | None = None
    ovmf_vars_template: Path | None = None
    ovmf_vars: Path | None = None  # a fresh copy of the template at every power on
    sercon: Path | None = None  # SeaBIOS: also print the screen's text on the serial port
    accel: Accel = "tcg"
    qemu: str = "qemu-system-x86_64"
    bmc_address: str | None = None  # told to the OS as an SMBIOS OEM string (type 11)
    uuid: str | None = None  # SMBIOS system UUID (type 1)
    serial: str | None = None  # SMBIOS system serial number (type 1)
    extra_disks: tuple[Path, ...] = ()  # more virtio disks (qcow2), never booted from
    pxe: bool = True  # False: the NIC has no boot ROM (a live host never boots from the net)
    cpus: int = 1  # vCPUs (TCG: one host thread each, so a VM can use more than one core)


def spec_to_json(spec: VmSpec) -> str:
    data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(spec).items()}
    data["extra_disks"] = [str(p) for p in spec.extra_disks]
    return json.dumps(data, indent=2) + "\n"


def load_spec(path: Path) -> VmSpec:
    """Read a vm.json; ConfigError naming the file and the field on any problem."""
    try:
        data = json.loads(read_text(path, what="VM spec", limit=MAX_STATE_BYTES))
    except FileNotFoundError:
        raise ConfigError(f"no VM spec at {path}") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable JSON VM spec: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    known = {f.name: f for f in fields(VmSpec)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{path}: unknown keys: {', '.join(unknown)}")
    paths = {"disk", "serial_log", "qmp_socket", "qemu_log"}
    optional_paths = {"ovmf_code", "ovmf_vars_template", "ovmf_vars", "sercon"}
    values: dict[str, object] = {}
    for name, value in data.items():
        if name in paths:
            values[name] = Path(str(value))
        elif name in optional_paths:
            values[name] = Path(str(value)) if value else None
        elif name == "extra_disks":
            if not isinstance(value, list):
                raise ConfigError(f"{path}: extra_disks: must be a list of paths")
            values[name] = tuple(Path(str(v)) for v in value)
        else:
            values[name] = value
    try:
        spec = VmSpec(**values)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if spec.firmware not in ("bios", "uefi"):
        raise ConfigError(f"{path}: firmware: must be bios or uefi, not {spec.firmware!r}")
    if spec.accel not in ("tcg", "kvm"):
        raise ConfigError(f"{path}: accel: must be tcg or kvm, not {spec.accel!r}")
    if spec.firmware == "uefi" and not (spec.ovmf_code and spec.ovmf_vars):
        raise ConfigError(f"{path}: a uefi VM needs ovmf_code and ovmf_vars")
    return spec


def events_socket(spec: VmSpec) -> Path:
    """QEMU's second monitor, where the BMC hears why the VM stopped (``SHUTDOWN``)."""
    return spec.qmp_socket.with_name("ev.sock")  # not longer than qmp.sock: path limit


def media_file(spec: VmSpec) -> Path:
    """Where the BMC keeps the ISO inserted into the server's virtual CD drive."""
    return spec.disk.with_name(spec.name + MEDIA_SUFFIX)


def qemu_argv(
    spec: VmSpec, *, network_first: bool, cd_first: bool = False, media: Path | None = None
) -> list[str]:
    """The QEMU command for one power-on. ``network_first``: this boot tries PXE first;
    ``cd_first``: it tries the CD drive first; ``media``: the ISO in the CD drive."""
    nic_index = PXE_FIRST_BOOTINDEX if network_first else NIC_BOOTINDEX
    cd_index = PXE_FIRST_BOOTINDEX if cd_first and not network_first else CD_BOOTINDEX
    # without a boot ROM the NIC cannot boot, whatever its bootindex: the firmware moves on
    nic_rom = "" if spec.pxe else ",romfile="
    cd_drive = "if=none,id=cdrom0,media=cdrom,readonly=on"
    if media is not None:
        cd_drive += f",format=raw,file={media}"
    argv = [
        spec.qemu,
        "-name",
        spec.name,
        "-nodefaults",
        "-accel",
        f"tcg,tb-size={TCG_TB_SIZE_MIB}" if spec.accel == "tcg" else spec.accel,
        "-smp",
        str(spec.cpus),
        "-m",
        str(spec.memory_mib),
        "-display",
        "none",
        "-chardev",
        f"file,id=serial0,path={spec.serial_log},append=on",
        "-serial",
        "chardev:serial0",
        "-qmp",
        f"unix:{spec.qmp_socket},server=on,wait=off",
        "-qmp",
        f"unix:{events_socket(spec)},server=on,wait=off",
        # a reboot ends this QEMU process and the BMC starts a new one (qemu_backend.py)
        "-action",
        "reboot=shutdown",
        "-drive",
        f"file={spec.disk},format=qcow2,if=none,id=disk0,cache=unsafe",
        "-device",
        f"virtio-blk-pci,drive=disk0,id=disk0,bootindex={DISK_BOOTINDEX}",
        "-netdev",
        f"tap,id=net0,ifname={spec.tap},script=no,downscript=no",
        "-device",
        f"virtio-net-pci,id={NIC_ID},netdev=net0,mac={spec.mac},bootindex={nic_index}{nic_rom}",
        "-device",
        "virtio-rng-pci",
        "-drive",
        cd_drive,
        "-device",
        f"ide-cd,drive=cdrom0,id={CD_ID},bootindex={cd_index}",
    ]
    for number, extra in enumerate(spec.extra_disks, start=1):
        argv += [
            "-drive",
            f"file={extra},format=qcow2,if=none,id=disk{number},cache=unsafe",
            "-device",
            f"virtio-blk-pci,drive=disk{number},id=disk{number}",
        ]
    if spec.bmc_address:
        argv += ["-smbios", f"type=11,value=kpc.bmc_address={spec.bmc_address}"]
    if spec.uuid:
        argv += ["-uuid", spec.uuid]
    if spec.serial:
        argv += ["-smbios", f"type=1,serial={spec.serial}"]
    if spec.firmware == "uefi":
        assert spec.ovmf_code is not None and spec.ovmf_vars is not None
        argv += [
            "-machine",
            "q35",
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={spec.ovmf_code}",
            "-drive",
            f"if=pflash,format=raw,unit=1,file={spec.ovmf_vars}",
        ]
    else:
        argv += ["-machine", "pc"]
        if spec.sercon is not None:
            argv += ["-fw_cfg", f"name=etc/sercon-port,file={spec.sercon}"]
    return argv
