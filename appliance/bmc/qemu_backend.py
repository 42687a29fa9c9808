"""A simulated BMC's machine: one QEMU VM of the virtual lab, driven over QMP.

- power on: start QEMU as a child of this process, inside the switch namespace where the
  VM's tap device lives (``ip netns exec``); a UEFI VM gets a fresh copy of OVMF's
  variable store at every power on (a stale one made OVMF try PXEv6/HTTP and never boot);
- power off: QMP ``quit`` (kill if QEMU does not go), power state: is QEMU running, or
  is the machine between two processes of a reset (on, as a real BMC says during a
  reset). It never waits for the lock: a power query must answer at once while a power
  on or a reset waits seconds for a new QEMU's monitor (a lab wait's query timed out
  behind one, in CI);
- reset, the BMC's or the guest's own reboot: a new QEMU process, with the same disk, media
  and UEFI variables. QEMU runs with ``-action reboot=shutdown``; a thread per process
  reads the ``SHUTDOWN`` event on a second monitor (``vmspec.events_socket``) and starts
  the next process when its reason is a reset. Why not ``system_reset`` in the same
  process: under TCG the translated code of the previous boot survives a reset, and every
  write the firmware then makes over it (OVMF decompresses itself to 9-22 MiB, where the
  kernel ran) is slow: a UEFI node OS took 26 minutes in OVMF after its install reboot on
  a busy host, for a few seconds' work;
- one-time PXE (IPMI ``chassis bootdev pxe``): the NIC gets bootindex 0 for the next power
  on or reset only: the new process starts with it, and it is set back right after (QEMU
  writes the firmware's boot order, fw_cfg ``bootorder``, when it starts). The server's
  own later reboots boot its disk again, as on a real server;
- one-time CD boot (Redfish ``BootSourceOverrideTarget: Cd``): the same with the CD drive;
- virtual media: insert downloads the ISO from its URL (bootcfg's assets) next to the VM's
  disk and puts it in the CD drive (QMP ``blockdev-change-medium``, at once when the VM
  runs, else at its next power on); eject empties the drive (QMP ``eject``) and deletes it.
  A medium already in place when the BMC starts is in the drive.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

from appliance.bmc.backend import BootDevice, PowerState
from appliance.bootcfg.fetch import download
from appliance.drivers import netns
from appliance.drivers.qmp import Qmp, QmpError, QmpTimeout
from appliance.errors import BmcError, KpcError
from appliance.lab.vmspec import (
    CD_BOOTINDEX,
    CD_ID,
    CD_QOM_PATH,
    NIC_BOOTINDEX,
    NIC_QOM_PATH,
    PXE_FIRST_BOOTINDEX,
    VmSpec,
    events_socket,
    load_spec,
    media_file,
    qemu_argv,
)

log = logging.getLogger(__name__)

QMP_CONNECT_TIMEOUT = 10.0
QUIT_TIMEOUT = 10.0
# after a reset's SHUTDOWN: how long QEMU may take to end, and starting the next process
RESET_EXIT_TIMEOUT = 60.0
RESET_START_ATTEMPTS = 3
RESET_RETRY_DELAY = 2.0
# SHUTDOWN reasons (QMP's ShutdownCause) after which the machine boots again
REBOOT_REASONS = frozenset({"guest-reset", "host-qmp-system-reset", "host-ui"})
# the devices a one-time boot can put first: (QOM path, bootindex otherwise)
FIRST_DEVICES: dict[str, tuple[str, int]] = {
    "network": (NIC_QOM_PATH, NIC_BOOTINDEX),
    "cd": (CD_QOM_PATH, CD_BOOTINDEX),
}


class QemuBackend:
    """Implements ``appliance.bmc.backend.MachineBackend`` for one lab VM."""

    def __init__(self, spec: VmSpec) -> None:
        self.spec = spec
        self._child: netns.Child | None = None
        self._lock = threading.RLock()
        self._boot_device: BootDevice = "default"
        self._persistent = False
        self._resetting = False  # between a reset's SHUTDOWN and its next process
        # the ISO in the CD drive: one left there stays in (a restarted BMC, or the CD
        # 'kpc lab up --live-host' put in the drive of its live host)
        media = media_file(spec)
        self._media: Path | None = media if media.is_file() else None

    @property
    def mac(self) -> str:
        """The server's NIC, as its BMC's Redfish inventory reports it."""
        return self.spec.mac

    @classmethod
    def from_file(cls, vm_spec_json: Path) -> QemuBackend:
        return cls(load_spec(vm_spec_json))

    # --- helpers ----------------------------------------------------------------------
    def _running(self) -> bool:
        return self._child is not None and self._child.running()

    def _first_next(self) -> str | None:
        """The device the next boot tries first ("network", "cd"; None: the disk, as
        always); consumes a one-time setting."""
        first = self._boot_device if self._boot_device in FIRST_DEVICES else None
        if not self._persistent:
            self._boot_device = "default"
        return first

    def _qmp(self) -> Qmp:
        # no retrying once the process has ended: a guest that powered itself off takes
        # its monitor with it, and a caller (a Redfish or IPMI client) must not wait for it
        return Qmp.connect(
            self.spec.qmp_socket, timeout=5.0, retry_for=QMP_CONNECT_TIMEOUT, alive=self._running
        )

    def _set_bootindex(self, qmp: Qmp, device: str, first: bool) -> None:
        path, index = FIRST_DEVICES[device]
        value = PXE_FIRST_BOOTINDEX if first else index
        qmp.execute("qom-set", path=path, property="bootindex", value=value)

    def _fresh_vars(self) -> None:
        spec = self.spec
        if spec.firmware == "uefi":
            assert spec.ovmf_vars is not None and spec.ovmf_vars_template is not None
            shutil.copyfile(spec.ovmf_vars_template, spec.ovmf_vars)

    # --- MachineBackend ----------------------------------------------------------------
    def power_state(self) -> PowerState:
        # no lock (see the module notes): reading two attributes is atomic enough, and a
        # reading taken while a process is being replaced says "on" either way
        child = self._child
        return "on" if self._resetting or (child is not None and child.running()) else "off"

    def power_on(self) -> None:
        with self._lock:
            if self._running():
                return
            if self._child is not None:
                self._child.wait(0)  # collect the exit status of a VM that powered off
            first = self._first_next()
            log.info("%s: power on (first boot device: %s)", self.spec.name, first or "disk")
            self._start(first, fresh_vars=True)

    def _start(self, first: str | None, *, fresh_vars: bool) -> None:
        """Start QEMU (the lock held) with ``first`` tried first for this boot only."""
        spec = self.spec
        spec.qmp_socket.unlink(missing_ok=True)
        events_socket(spec).unlink(missing_ok=True)
        if fresh_vars:
            self._fresh_vars()
        argv = qemu_argv(
            spec, network_first=first == "network", cd_first=first == "cd", media=self._media
        )
        child = netns.spawn(argv, netns=spec.netns, log_file=spec.qemu_log)
        self._child = child
        try:
            with self._qmp() as qmp:
                if first and not (self._persistent and self._boot_device == first):
                    # this boot's order is fixed already; later boots use the disk first
                    self._set_bootindex(qmp, first, False)
        except QmpError as exc:
            code = child.poll()
            tail = _tail(spec.qemu_log)
            if code is not None:
                raise BmcError(
                    f"{spec.name}: QEMU exited with code {code} at power on: {tail}",
                    hint=f"see {spec.qemu_log}",
                ) from None
            raise BmcError(f"{spec.name}: {exc.message}") from None
        threading.Thread(
            target=self._follow, args=(child,), name=f"{spec.name}-reboots", daemon=True
        ).start()

    def _follow(self, child: netns.Child) -> None:
        """When ``child`` ends because the machine was reset, start the next process."""
        name = self.spec.name
        try:
            reason = self._shutdown_reason(child)
            if reason not in REBOOT_REASONS:
                child.wait(QUIT_TIMEOUT)  # an off (ours or the guest's): reap it, no more
                return
            self._resetting = True
            if child.wait(RESET_EXIT_TIMEOUT) is None:
                # with -action reboot=shutdown it ends by itself; a reset must not leave
                # the machine hanging between two processes
                log.warning(
                    "%s: QEMU still runs %ss after its reset: stopping it", name, RESET_EXIT_TIMEOUT
                )
                child.stop(QUIT_TIMEOUT)
            self._start_after_reset(child, reason)
        except Exception:  # a thread's exception would otherwise vanish: say it in the log
            log.exception("%s: following QEMU process %s failed", name, child.pid)
        finally:
            self._resetting = False

    def _start_after_reset(self, child: netns.Child, reason: str | None) -> None:
        name = self.spec.name
        for attempt in range(1, RESET_START_ATTEMPTS + 1):
            with self._lock:
                if self._child is not child:
                    return  # the BMC powered it on or off meanwhile
                keep = self._boot_device if self._persistent else "default"
                first = keep if keep in FIRST_DEVICES else None
                log.info("%s: reset (%s): a new QEMU process", name, reason)
                try:
                    self._start(first, fresh_vars=False)
                    return
                except BmcError as exc:
                    log.warning(
                        "%s: could not start again after a reset (attempt %d of %d): %s",
                        name,
                        attempt,
                        RESET_START_ATTEMPTS,
                        exc.message,
                    )
            time.sleep(RESET_RETRY_DELAY)
        log.error("%s: stays powered off: QEMU did not start again after its reset", name)

    def _shutdown_reason(self, child: netns.Child) -> str | None:
        """The reason of QEMU's SHUTDOWN event (None if it ended without one).

        Reads the event monitor until QEMU closes it (when it ends), not while the process
        runs: an event QEMU sent just before it ended is still read, so a reset is never
        taken for an off."""
        try:
            qmp = Qmp.connect(events_socket(self.spec), timeout=5.0, retry_for=QMP_CONNECT_TIMEOUT)
        except QmpError:
            return None
        with qmp:
            while True:
                try:
                    event = qmp.wait_event("SHUTDOWN", 5.0)
                except QmpTimeout:
                    continue
                except QmpError:
                    return None  # QEMU closed its monitor (it ended) without a SHUTDOWN
                data = event.get("data")
                return str(data.get("reason", "")) if isinstance(data, dict) else ""

    def power_off(self) -> None:
        with self._lock:
            child = self._child
            if child is None or not child.running():
                return
            log.info("%s: power off", self.spec.name)
            self._quit(child)

    def _quit(self, child: netns.Child) -> None:
        try:
            with Qmp(self.spec.qmp_socket, timeout=2.0) as qmp:
                qmp.execute("quit")
        except QmpError:
            child.signal(15)
        if child.wait(QUIT_TIMEOUT) is None:
            child.stop(1.0)

    def power_reset(self) -> None:
        with self._lock:
            child = self._child
            if child is None or not child.running():
                raise BmcError(f"{self.spec.name} is powered off: nothing to reset")
            first = self._first_next()
            log.info("%s: reset (first boot device: %s)", self.spec.name, first or "disk")
            self._quit(child)
            self._start(first, fresh_vars=False)

    def power_cycle(self) -> None:
        with self._lock:
            self.power_off()
            self.power_on()

    def boot_device(self) -> BootDevice:
        with self._lock:
            return self._boot_device

    def set_boot_device(self, device: BootDevice, persistent: bool) -> None:
        with self._lock:
            log.info("%s: boot device %s (persistent: %s)", self.spec.name, device, persistent)
            self._boot_device = device
            self._persistent = persistent
            if self._running() and persistent:
                try:
                    with self._qmp() as qmp:
                        for each in FIRST_DEVICES:
                            self._set_bootindex(qmp, each, each == device)
                except QmpError as exc:
                    if self._running():
                        raise BmcError(f"{self.spec.name}: {exc.message}") from None
                    # it powered off meanwhile: the next power on starts with this order

    def insert_media(self, url: str) -> None:
        """Fetch the ISO at ``url`` and put it in the CD drive (see the module notes)."""
        target = media_file(self.spec)
        target.with_name(target.name + ".part").unlink(missing_ok=True)  # never resume another
        log.info("%s: virtual media: fetching %s", self.spec.name, url)
        try:
            download(url, target)
        except KpcError as exc:
            raise BmcError(f"{self.spec.name}: cannot fetch {url}: {exc.message}") from None
        with self._lock:
            self._media = target
            if self._running():
                try:
                    with self._qmp() as qmp:
                        qmp.execute(
                            "blockdev-change-medium", id=CD_ID, filename=str(target), format="raw"
                        )
                except QmpError as exc:
                    if self._running():
                        self._media = None
                        raise BmcError(f"{self.spec.name}: cannot insert: {exc.message}") from None
                    # it powered off meanwhile: the CD is in the drive at its next power on
            log.info("%s: virtual media: %s in the CD drive", self.spec.name, target.name)

    def eject_media(self) -> None:
        with self._lock:
            if self._running():
                try:
                    with self._qmp() as qmp:
                        qmp.execute("eject", id=CD_ID, force=True)
                except QmpError as exc:
                    if self._running():
                        raise BmcError(f"{self.spec.name}: cannot eject: {exc.message}") from None
                    # it powered off meanwhile: its drive went with the process
            self._media = None
            media_file(self.spec).unlink(missing_ok=True)
            log.info("%s: virtual media ejected", self.spec.name)

    def close(self) -> None:
        """Power the VM off (the simulator is going away)."""
        self.power_off()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no QEMU log)"
    return " | ".join(text.strip().splitlines()[-lines:]) or "(empty QEMU log)"
