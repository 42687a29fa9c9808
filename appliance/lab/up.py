"""``kpc lab up``: make the virtual lab, or say plainly why not.

Order: check tools and the directory; build (or reuse) the lab OS; then record-and-make
the nftables guard, namespaces, bridges and links; the servers' disks and VM specs; the
lab's site config and bootcfg data; the supervisor (site router + one BMC per server);
wait until every BMC answers (IPMI or Redfish). A failure part-way removes what was made.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from appliance.config import load_config
from appliance.drivers import netns, process
from appliance.errors import CommandFailed, KpcError, ToolMissing, UsageError
from appliance.keys import AuthorizedKey, parse_authorized_keys
from appliance.lab import live as live_host
from appliance.lab import network, render
from appliance.lab.down import SUPERVISOR_STOP_TIMEOUT, DownResult, stop_pid
from appliance.lab.layout import LabPaths
from appliance.lab.nodeos import NodeOs, build_node_os
from appliance.lab.osbuild import LabOs, build_lab_os
from appliance.lab.osimage import KERNEL_ARGS_COMMON
from appliance.lab.osmedia import build_media
from appliance.lab.plan import BmcChoice, FirmwareChoice, LabPlan, Server, make_plan
from appliance.lab.state import LabState, Resource, load_state, record, save_state
from appliance.lab.supervisor import read_record
from appliance.lab.vmspec import Accel, VmSpec, load_spec, media_file, spec_to_json

Progress = Callable[[str], None]

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
SERCON_PORT = b"\xf8\x03"  # 0x3f8, COM1: SeaBIOS copies its screen (and iPXE's) there
TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "dnsmasq": "dnsmasq-base",
    "ip": "iproute2",
    "nft": "nftables",
    "ipmitool": "ipmitool",
    "ssh-keygen": "openssh-client",
}
BMC_READY_TIMEOUT = 60.0
BMC_USER = "admin"
FLATCAR_MEMORY_MIB = 2048  # Flatcar's PXE initrd unpacks its whole /usr into RAM
NODE_OS_MEMORY_MIB = 3072  # the node OS: PXE root in RAM, then Docker and a few Kolla services
# the kernel unpacks the 230 MB PXE image into a tmpfs of half the RAM: at 1024 MiB a UEFI
# server stopped with "Initramfs unpacking failed: write error"; 1536 installed BIOS and UEFI
NODE_OS_MIN_MEMORY_MIB = 1536
BUSYBOX_MEMORY_MIB = 256
NODE_OS_DISK_GIB = 40  # sparse qcow2: room for Kolla's images and volumes
LabOsKind = Literal["node", "busybox"]
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the final NUL


class LabError(KpcError):
    """The lab cannot be made, or is not in the state asked for."""


@dataclass(frozen=True)
class UpRequest:
    directory: Path
    nodes: int
    firmware: FirmwareChoice = "mixed"
    name: str = "kpcl"
    network: int = 0
    memory_mib: int | None = None  # default: by the OS (node 3072, busybox 256)
    cpus: int = 1  # vCPUs per server
    os: LabOsKind = "busybox"  # node: the Flatcar-shaped node OS; busybox: the small stand-in
    mirror: str = "http://deb.debian.org/debian"  # where the node OS's packages come from
    cache: Path = Path("/var/cache/kpc/lab-os")
    accel: str = "tcg"  # tcg, kvm (after a boot probe), or auto (kvm if the probe boots)
    bootcfg_port: int = 8080
    registry_port: int = 5000
    services_prefix: str = "kpclab"
    flatcar_assets: Path | None = None  # assets/flatcar of a data dir 'kpc assets fetch' filled
    bmc: BmcChoice = "ipmi"  # what the simulated BMCs speak: ipmi, redfish, or mixed
    deploy_hosts: int = 1  # 2: a second deploy host (own namespace and services), etcd
    live_host: bool = False  # one more server, live-booted from the node OS's CD (lab/live)
    operator_key: Path | None = None  # the live host's core user's public key file


@dataclass(frozen=True)
class UpResult:
    state: LabState
    config: Path
    already_up: bool = False
    resumed: bool = False  # its supervisor was gone and runs again; every server is off


def check_prerequisites(plan: LabPlan) -> None:
    """Root, the programs the lab runs, and OVMF when a server boots UEFI."""
    if os.geteuid() != 0:
        raise LabError(
            "the virtual lab needs root (it makes network namespaces and bridges)",
            hint="run it as root (sudo kpc lab up ...)",
        )
    for tool, package in TOOLS.items():
        process.which(tool, package)
    if plan.deploy_hosts > 1:
        process.which("etcd", "etcd-server")
        process.which("docker", "docker.io")
    if any(s.firmware == "uefi" for s in plan.servers):
        for path in (OVMF_CODE, OVMF_VARS):
            if not path.is_file():
                raise ToolMissing(f"OVMF (UEFI firmware for QEMU, {path})", "ovmf")


KVM_PROBE_TIMEOUT = 30.0
PROBE_LINE = "probe: the lab OS runs"


def probe_kvm(lab_os: LabOs, work: Path) -> bool:
    """Whether a KVM guest really boots here: /dev/kvm alone proves nothing (nested
    virtualisation can hang guests in the kernel's decompressor)."""
    if not Path("/dev/kvm").exists():
        return False
    serial = work / "kvm-probe.log"
    serial.unlink(missing_ok=True)
    child = netns.spawn(
        [
            *("qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults"),
            *("-display", "none", "-serial", f"file:{serial}", "-no-reboot"),
            *("-kernel", str(lab_os.kernel), "-initrd", str(lab_os.initrd)),
            *("-append", f"{KERNEL_ARGS_COMMON} kpc.role=probe"),
        ]
    )
    deadline = time.monotonic() + KVM_PROBE_TIMEOUT
    try:
        while time.monotonic() < deadline and child.running():
            if serial.is_file() and PROBE_LINE in serial.read_text(errors="replace"):
                return True
            time.sleep(0.2)
        return serial.is_file() and PROBE_LINE in serial.read_text(errors="replace")
    finally:
        child.stop(2.0)
        serial.unlink(missing_ok=True)


def _choose_accel(requested: str, lab_os: LabOs, work: Path, progress: Progress) -> Accel:
    if requested == "tcg":
        return "tcg"
    progress("probing KVM: booting the lab OS once under KVM")
    if probe_kvm(lab_os, work):
        progress("KVM works here: the servers use it")
        return "kvm"
    if requested == "kvm":
        raise LabError(
            "KVM does not work on this host (a test boot under KVM did not reach the lab OS "
            f"within {KVM_PROBE_TIMEOUT:.0f}s)",
            hint="use --accel tcg (the default), or fix nested virtualisation",
        )
    progress("KVM does not work here (the probe did not boot): the servers use TCG")
    return "tcg"


def _check_directory(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--dir {directory} is a file, not a directory")
    if directory.is_dir() and any(directory.iterdir()):
        raise UsageError(
            f"{directory} is not empty and holds no lab: kpc lab up makes its files in an "
            "empty directory (kpc lab down removes them again)",
            hint="give another --dir, or empty this one",
        )


def _existing(state: LabState, plan: LabPlan, firmware: str, progress: Progress) -> UpResult:
    """An existing lab: the same one (already up), the same one with only its supervisor
    gone (resumed), or a clear refusal."""
    where = state.directory
    if state.phase != "up":
        raise LabError(
            f"the lab in {where} is not complete (its state is {state.phase!r}: kpc lab up "
            "was interrupted, or kpc lab down did not finish)",
            hint=f"remove it with 'kpc lab down --dir {where}', then run kpc lab up again",
        )
    if state.plan != plan or state.firmware != firmware:
        have = f"{len(state.plan.servers)} servers ({state.firmware})"
        raise LabError(
            f"a different lab is already up in {where}: {have}",
            hint=f"'kpc lab down --dir {where}' first, or use another --dir and --name",
        )
    gone = network.missing(plan)
    paths = LabPaths(where)
    record_ = read_record(paths) or {}
    pid, start = record_.get("pid"), record_.get("start_time")
    running = isinstance(pid, int) and netns.process_start_time(pid) == start
    if gone:
        supervisor = "" if running else "; its supervisor (site router and BMCs) is not running"
        raise LabError(
            f"the lab in {where} is up but broken: gone from this host: {', '.join(gone)}"
            f"{supervisor} (a reboot of this host, or removed by hand); kpc lab up resumes a "
            "lab only when its namespaces, links and nftables table are all there",
            hint=f"'kpc lab down --dir {where}' removes the lab and with it every server's disk "
            f"({paths.servers}/*/disk.qcow2: copy one you need first), then kpc lab up again",
        )
    if not running:
        return _resume(state, paths, progress)
    return UpResult(state, state.config or paths.config, already_up=True)


RESUME_WAIT = 30.0  # for a server's QEMU to go with its BMC (SIGTERM with the supervisor)


def _leftovers(state: LabState, paths: LabPaths) -> list[int]:
    """Processes of a dead supervisor: everything in the lab's own namespaces (QEMU, the
    BMCs, the router), and the children it recorded that still name the lab's directory."""
    pids = {pid for ns in state.plan.own_namespaces for pid in netns.netns_pids(ns)}
    children = (read_record(paths) or {}).get("children")
    if isinstance(children, dict):
        recorded = {pid for pid in children.values() if isinstance(pid, int)}
        pids |= recorded & set(netns.pids_naming(state.directory))
    return sorted(pid for pid in pids if netns.process_start_time(pid) is not None)


def _running_servers(state: LabState, paths: LabPaths) -> list[int]:
    return [
        pid for pid in _leftovers(state, paths) if netns.process_argv(pid).startswith("qemu-system")
    ]


def _stop_leftovers(state: LabState, paths: LabPaths, progress: Progress) -> None:
    """Stop what the dead supervisor left (the site router's dnsmasq changes its user, so
    it does not get its parent's death signal), but never a server that is still on."""
    deadline = time.monotonic() + RESUME_WAIT
    while (servers := _running_servers(state, paths)) and time.monotonic() < deadline:
        for pid in servers:
            netns.reap_if_child(pid)
        time.sleep(0.2)
    if servers:
        listed = "; ".join(f"pid {pid}: {netns.process_argv(pid)[:80]}" for pid in servers)
        raise LabError(
            f"the lab in {state.directory} cannot be resumed: {len(servers)} of its servers "
            f"still run without their BMC {RESUME_WAIT:.0f}s after its supervisor died "
            f"({listed})",
            hint="shut them down from inside, or kill their QEMU (a power cut: their disks "
            "stay), then kpc lab up again",
        )
    children = (read_record(paths) or {}).get("children")
    roles = {pid: role for role, pid in children.items()} if isinstance(children, dict) else {}
    stopped = DownResult(found=True)
    for pid in _leftovers(state, paths):
        what = roles.get(pid) or Path(netns.process_argv(pid).split(" ")[0]).name
        stop_pid(pid, netns.process_start_time(pid), str(what), stopped)
    if stopped.stopped:
        progress(f"stopped what the dead supervisor left: {', '.join(stopped.stopped)}")


def _resume(state: LabState, paths: LabPaths, progress: Progress) -> UpResult:
    """Start a lab's supervisor again (after a killed supervisor): its network is intact,
    every disk stays as it is, every server stays off until an operator powers it on."""
    check_prerequisites(state.plan)
    progress(
        f"the lab in {state.directory} is up but its supervisor is gone (killed?): starting "
        "it again; every server's disk is kept"
    )
    _stop_leftovers(state, paths, progress)
    paths.supervisor.unlink(missing_ok=True)  # the dead one's record
    progress("site router and simulated BMCs: starting")
    supervisor = _start_supervisor(state, paths)
    try:
        _wait_for_bmcs(state, paths, progress, removed=False)
        if state.plan.etcd_members:
            _wait_for_etcd(state.plan, paths, progress, removed=False)
    except BaseException:
        supervisor.stop(SUPERVISOR_STOP_TIMEOUT)  # so that the next kpc lab up resumes again
        raise
    return UpResult(state, state.config or paths.config, resumed=True)


def _disk(path: Path, gib: int) -> Path:
    process.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), f"{gib}G"])
    return path


def _server_files(state: LabState, paths: LabPaths, accel: Accel) -> None:
    paths.sercon.write_bytes(SERCON_PORT)
    for server in state.plan.servers:
        sp = paths.server(server)
        sp.directory.mkdir(parents=True, exist_ok=True)
        _disk(sp.disk, state.plan.disk_gib)
        live = server.role == "live"
        small = (_disk(sp.directory / "small.qcow2", live_host.SMALL_DISK_GIB),) if live else ()
        uefi = server.firmware == "uefi"
        spec = VmSpec(
            name=server.name,
            firmware=server.firmware,
            memory_mib=server.memory_mib,
            cpus=server.cpus,
            mac=server.mac,
            netns=state.plan.switch_ns,
            tap=server.tap,
            disk=sp.disk,
            serial_log=sp.serial_log,
            qmp_socket=sp.qmp_socket,
            qemu_log=sp.qemu_log,
            ovmf_code=OVMF_CODE if uefi else None,
            ovmf_vars_template=OVMF_VARS if uefi else None,
            ovmf_vars=sp.ovmf_vars if uefi else None,
            sercon=None if uefi else paths.sercon,
            accel=accel,
            bmc_address=str(server.bmc_address),
            uuid=server.uuid,
            serial=server.serial,
            extra_disks=small,
            pxe=not live,
        )
        sp.spec.write_text(spec_to_json(spec), encoding="utf-8")


def _secret_file(path: Path, value: str) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(value + "\n")


def _ssh_key(paths: LabPaths) -> None:
    paths.ssh_key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    process.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kpc-lab", "-f", str(paths.ssh_key)]
    )


def bmc_power_state(
    address: str, user: str, password_file: Path, timeout: float = 3.0, protocol: str = "ipmi"
) -> str | None:
    """``on``/``off`` as the BMC at ``address`` reports it (over IPMI, or Redfish), None if
    it does not answer within ``timeout`` (a busy BMC is no reason to end a wait).
    ipmitool reads the password from the file (``-f``), curl from its config on stdin:
    never from argv."""
    if protocol == "redfish":
        try:
            password = password_file.read_text().strip()
        except OSError:
            return None
        try:
            answer = process.run(
                ["curl", "-sk", "--fail", "--max-time", str(timeout), "-K", "-",
                 f"https://{address}/redfish/v1/Systems/1"],
                check=False, stdin=f'user = "{user}:{password}"\n', timeout=timeout + 2,
            )  # fmt: skip
        except CommandFailed:  # curl itself hung past its own limit
            return None
        state = re.search(r'"PowerState":\s*"(\w+)"', answer.stdout)
        return state.group(1).lower() if answer.returncode == 0 and state else None
    try:
        result = process.run(
            [
                *("ipmitool", "-I", "lanplus", "-H", address, "-U", user),
                *("-f", str(password_file), "-N", "1", "-R", "1", "power", "status"),
            ],
            check=False,
            timeout=timeout,
        )
    except CommandFailed:  # it timed out: a BMC that does not answer in time
        return None
    words = result.stdout.strip().split()
    return words[-1] if result.returncode == 0 and words else None


def _start_supervisor(state: LabState, paths: LabPaths) -> netns.Child:
    paths.logs.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "appliance", "lab", "supervise", "--dir", str(state.directory)]
    child = netns.spawn(
        argv, log_file=paths.supervisor_log, new_session=True, die_with_parent=False
    )
    record(
        state,
        Resource(
            "process", "supervisor", pid=child.pid, start_time=netns.process_start_time(child.pid)
        ),
    )
    return child


def _log_tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(f"    {line}" for line in tail) or "    (empty log)"


REMOVED_HINT = "the lab was removed again; fix what the logs above say and rerun"
KEPT_HINT = (
    "the lab and its disks are kept and its supervisor stopped again; fix what the logs "
    "above say and run kpc lab up again"
)


def _wait_for_bmcs(
    state: LabState, paths: LabPaths, progress: Progress, *, removed: bool = True
) -> None:
    deadline = time.monotonic() + BMC_READY_TIMEOUT
    waiting = list(state.plan.servers)
    while True:
        waiting = [
            s
            for s in waiting
            if bmc_power_state(str(s.bmc_address), BMC_USER, paths.bmc_password, protocol=s.bmc)
            is None
        ]
        if not waiting:
            break
        supervisor = state.processes()[-1]
        if supervisor.pid is not None and netns.process_start_time(supervisor.pid) is None:
            raise LabError(
                "the lab's supervisor exited while starting:\n" + _log_tail(paths.supervisor_log),
            )
        record = read_record(paths) or {}
        gave_up = record.get("gave_up") or []
        if time.monotonic() > deadline or gave_up:
            details = "\n".join(
                f"  {s.name} ({s.bmc_address}), the end of {paths.server(s).bmc_log}:\n"
                + _log_tail(paths.server(s).bmc_log)
                for s in waiting
            )
            raise LabError(
                f"{len(waiting)} simulated BMCs do not answer"
                + (" (they keep exiting)" if gave_up else f" after {BMC_READY_TIMEOUT:.0f}s")
                + f":\n{details}",
                hint=REMOVED_HINT if removed else KEPT_HINT,
            )
        time.sleep(0.5)
    kinds = sorted({s.bmc for s in state.plan.servers})
    progress(f"{len(state.plan.servers)} simulated BMCs answer ({' and '.join(kinds)})")


def _check_live_request(request: UpRequest) -> list[AuthorizedKey]:
    """The operator's keys for --live-host (read before anything is made), or a UsageError
    for a combination that cannot work."""
    if request.operator_key is not None and not request.live_host:
        raise UsageError(
            "--operator-key is the live host's key, and there is no live host",
            hint="add --live-host, or leave --operator-key out",
        )
    if not request.live_host:
        return []
    if request.os != "node":
        raise UsageError(
            "--live-host boots the node OS (Flatcar-shaped, real Ignition); the busybox lab "
            "OS has no live profile",
            hint="add --os node",
        )
    if request.operator_key is None:
        raise UsageError(
            "--live-host needs --operator-key: the public key core will accept (the live "
            "host has no password and no other way in)",
            hint=live_host.KEY_HINT,
        )
    return live_host.read_operator_key(request.operator_key)


def _boot_from_cd(server: Server, paths: LabPaths) -> None:
    """What an operator does at a BMC: boot once from the CD drive, power on (kpc's own
    IPMI and Redfish jobs, against the server's simulated BMC)."""
    from appliance.bmc import control
    from appliance.bmc.actions import Action, BootDevice, Kind, PowerAction, power
    from appliance.bmc.jobs import Credentials, Protocol, RunOptions, Target, Tls

    password = paths.bmc_password.read_text(encoding="utf-8").strip()
    target = Target(
        str(server.bmc_address),
        Credentials(BMC_USER, password),
        name=server.name,
        protocol=Protocol.REDFISH if server.bmc == "redfish" else Protocol.IPMI,
        tls=Tls(insecure=True),  # the lab's own simulated BMC, on the lab's BMC network
    )
    for action in (Action(Kind.BOOTDEV, device=BootDevice.CD), power(PowerAction.ON)):
        outcome = control.run([target], action, RunOptions(timeout=30.0))[0]
        if not outcome.ok:
            raise LabError(
                f"{server.name}: its BMC {server.bmc_address} did not {action.describe()}: "
                f"{outcome.error}",
                hint=f"see {paths.server(server).bmc_log}",
            )


ETCD_READY_TIMEOUT = 60.0


def _holder_image(plan: LabPlan) -> str:
    """The image of the second deploy host's holder container: kpc's base image."""
    if plan.deploy_hosts < 2:
        return ""
    from appliance.config import Images
    from appliance.drivers.docker import Docker

    image = Images().base
    if Docker(os.environ).image(image) is None:
        raise LabError(
            f"--deploy-hosts {plan.deploy_hosts} needs the image {image} (the second deploy "
            "host's namespace is held by a container of it), which is not built yet",
            hint="build it first: kpc images base",
        )
    return image


def _wait_for_etcd(
    plan: LabPlan, paths: LabPaths, progress: Progress, *, removed: bool = True
) -> None:
    """Until the lab's etcd cluster has a leader (a linearizable read needs one)."""
    from appliance.drivers.etcd import EtcdClient, EtcdError

    client = EtcdClient(render.etcd_endpoints(plan, 1), timeout=2.0)
    deadline = time.monotonic() + ETCD_READY_TIMEOUT
    problem = ""
    try:
        while time.monotonic() < deadline:
            try:
                client.range("kpc/", count_only=True)
                progress(f"etcd: {len(plan.etcd_members)} members, with a leader")
                return
            except EtcdError as exc:
                problem = str(exc)
            time.sleep(0.5)
    finally:
        client.close()
    logs = "\n".join(
        f"  {name}:\n" + _log_tail(paths.logs / f"{name}.log")
        for name in (render.etcd_name(plan, i) for i in range(len(plan.etcd_members)))
    )
    raise LabError(
        f"the lab's etcd cluster has no leader after {ETCD_READY_TIMEOUT:.0f}s ({problem}):\n"
        + logs,
        hint=REMOVED_HINT if removed else KEPT_HINT,
    )


def lab_up(request: UpRequest, progress: Progress, tear_down: Callable[[Path], object]) -> UpResult:
    """Make the lab described by ``request``; ``tear_down`` removes a half-made one."""
    node = request.os == "node"
    memory = request.memory_mib or (NODE_OS_MEMORY_MIB if node else BUSYBOX_MEMORY_MIB)
    operator_keys = _check_live_request(request)
    plan = make_plan(
        request.nodes,
        request.firmware,
        bmc=request.bmc,
        name=request.name,
        memory_mib=memory,
        cpus=request.cpus,
        network=request.network,
        deploy_hosts=request.deploy_hosts,
        live_host_memory_mib=(request.memory_mib or NODE_OS_MEMORY_MIB)
        if request.live_host
        else None,
    )
    if node:
        plan = replace(plan, disk_gib=NODE_OS_DISK_GIB)
    directory = request.directory.absolute()
    existing = load_state(directory)
    if existing is not None:
        return _existing(existing, plan, request.firmware, progress)
    _check_directory(directory)
    longest = LabPaths(directory).server(plan.servers[-1]).qmp_socket
    if len(str(longest)) > MAX_SOCKET_PATH:
        raise UsageError(
            f"--dir {directory} is too long: QEMU's control socket {longest} would pass the "
            f"{MAX_SOCKET_PATH}-character limit of unix socket paths",
            hint="choose a shorter --dir",
        )
    check_prerequisites(plan)
    taken = network.conflicts(plan)
    if taken:
        raise LabError(
            f"lab {plan.name!r} cannot be made: these already exist: {', '.join(taken)}",
            hint="another lab is up (kpc lab down --dir ITS_DIR), or choose --name and --network",
        )
    node_os: NodeOs | None = None
    if node:
        node_os = build_node_os(request.cache, request.mirror, progress)
        progress(
            f"node OS {node_os.version} (kernel {node_os.kernel_release}) in {node_os.directory}"
        )
    if not node or request.accel != "tcg":
        lab_os: LabOs = build_lab_os(request.cache, progress)  # also the KVM probe's OS
        build_media(lab_os)  # its CD, for the BMCs' virtual media (assets/lab/media.iso)
        if not node:
            progress(
                f"lab OS {lab_os.version} (kernel {lab_os.kernel_release}) in {lab_os.directory}"
            )
        accel = _choose_accel(request.accel, lab_os, request.cache, progress)
    else:
        accel = "tcg"

    paths = LabPaths(directory)
    state = LabState(
        directory=directory,
        plan=plan,
        firmware=request.firmware,
        lab_os=node_os.directory if node_os else lab_os.directory,
        config=paths.config,
    )
    save_state(state)
    try:
        progress(
            f"network: namespaces {', '.join(plan.namespaces)}; host links "
            f"{plan.host_site_link} ({plan.deploy_address}) and {plan.host_bmc_link} "
            f"({plan.deploy_bmc_address})"
        )
        holder_image = _holder_image(plan)
        network.create_network(plan, lambda resource: record(state, resource), holder_image)
        progress(f"servers: {len(plan.servers)} VMs, powered off, disk first")
        _server_files(state, paths, accel)
        _secret_file(paths.bmc_password, secrets.token_hex(8))  # IPMI: at most 16-20 bytes
        _ssh_key(paths)
        public = paths.ssh_key.with_suffix(".pub")
        keys = parse_authorized_keys(public.read_text(encoding="utf-8"), str(public)).keys
        from appliance.lab import bootcfg_data  # bootcfg's seeding, lazily

        for host in range(1, plan.deploy_hosts + 1):
            config_text = render.site_config(
                plan,
                directory=directory,
                bmc_user=BMC_USER,
                bmc_password_file=paths.bmc_password,
                ssh_private_key=paths.ssh_key,
                bootcfg_port=request.bootcfg_port,
                registry_port=request.registry_port,
                services_prefix=request.services_prefix,
                os_version=node_os.version if node_os else "current",
                host=host,
            )
            paths.host_config(host).write_text(config_text, encoding="utf-8")
            config = load_config(paths.host_config(host))
            if node_os is not None:
                boots = bootcfg_data.prepare_node_os_data_dir(config, node_os, keys)
            else:
                boots = bootcfg_data.prepare_data_dir(
                    config, lab_os, keys, flatcar_assets=request.flatcar_assets
                )
            progress(f"bootcfg data in {config.bootcfg.data_dir}: the installer boots {boots}")
            if host == 1 and node_os is not None:
                for server in plan.live_hosts:
                    spec = load_spec(paths.server(server).spec)
                    args = live_host.live_kernel_args(config, node_os.version)
                    ignition = live_host.live_ignition(config, node_os.version, operator_keys)
                    live_host.build_live_media(node_os, args, ignition, media_file(spec))
                    progress(f"{server.name}: the node OS's live CD in its drive")
        if boots.startswith("Flatcar") and memory < FLATCAR_MEMORY_MIB:
            progress(
                f"warning: Flatcar's PXE image needs about {FLATCAR_MEMORY_MIB} MiB of RAM; "
                f"the servers have {memory} (kpc lab up --memory)"
            )
        if node_os is not None and memory < NODE_OS_MIN_MEMORY_MIB:
            progress(
                f"warning: the node OS's PXE image needs about {NODE_OS_MIN_MEMORY_MIB} MiB of "
                f"RAM (the kernel unpacks it into half the RAM); the servers have {memory} "
                "(kpc lab up --memory)"
            )
        progress("site router and simulated BMCs: starting")
        _start_supervisor(state, paths)
        _wait_for_bmcs(state, paths, progress)
        for server in plan.live_hosts:
            _boot_from_cd(server, paths)
            progress(
                f"{server.name}: powered on, booting its CD once (BMC {server.bmc_address}); "
                f"it will answer at {plan.live_address(server)}"
            )
        if plan.etcd_members:
            _wait_for_etcd(plan, paths, progress)
        state.phase = "up"
        save_state(state)
    except BaseException:
        state.phase = "failed"
        save_state(state)
        progress("lab up failed: removing what it made")
        tear_down(directory)
        raise
    return UpResult(state, paths.config)
