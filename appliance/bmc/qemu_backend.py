"""A simulated BMC's machine: one QEMU VM of the virtual lab, driven over QMP.

- power on: start QEMU as a child of this process, inside the switch namespace where the
  VM's tap device lives (``ip netns exec``); a UEFI VM gets a fresh copy of OVMF's
  variable store at every power on (a stale one made OVMF try PXEv6/HTTP and never boot);
- power off: QMP ``quit`` (kill if QEMU does not go), power state: is QEMU running;
- reset: QMP ``system_reset``;
- one-time PXE (IPMI ``chassis bootdev pxe``): the NIC gets bootindex 0 for the next power
  on or reset only. QEMU writes the firmware's boot order (fw_cfg ``bootorder``) at every
  reset, so: on power on QEMU starts with bootindex 0 and it is set back right after; on
  reset it is set with ``qom-set`` before ``system_reset`` and set back once the reset is
  done. SeaBIOS answers a reset after its POST with a reset of its own (a "hard reboot",
  a second RESET event from the guest), which writes the boot order again: for BIOS the
  bootindex is set back only after that one. The server's own later reboots boot its disk
  again, as on a real server.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from appliance.bmc.backend import BootDevice, PowerState
from appliance.drivers import netns
from appliance.drivers.qmp import Qmp, QmpError
from appliance.errors import BmcError
from appliance.lab.vmspec import (
    NIC_BOOTINDEX,
    NIC_QOM_PATH,
    PXE_FIRST_BOOTINDEX,
    VmSpec,
    load_spec,
    qemu_argv,
)

log = logging.getLogger(__name__)

QMP_CONNECT_TIMEOUT = 10.0
RESET_EVENT_TIMEOUT = 10.0
QUIT_TIMEOUT = 10.0
SEABIOS_RESET_TIMEOUT = 20.0


class QemuBackend:
    """Implements ``appliance.bmc.backend.MachineBackend`` for one lab VM."""

    def __init__(self, spec: VmSpec) -> None:
        self.spec = spec
        self._child: netns.Child | None = None
        self._lock = threading.RLock()
        self._boot_device: BootDevice = "default"
        self._persistent = False

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

    def _network_next(self) -> bool:
        """Whether the next boot goes to the network; consumes a one-time setting."""
        network = self._boot_device == "network"
        if not self._persistent:
            self._boot_device = "default"
        return network

    def _qmp(self) -> Qmp:
        return Qmp.connect(self.spec.qmp_socket, timeout=5.0, retry_for=QMP_CONNECT_TIMEOUT)

    def _set_nic_bootindex(self, qmp: Qmp, index: int) -> None:
        qmp.execute("qom-set", path=NIC_QOM_PATH, property="bootindex", value=index)

    def _wait_firmware_reset(self, qmp: Qmp) -> None:
        """SeaBIOS's own reset after ours (see the module notes); rarely none comes (a reset
        early in POST), and then the bootindex is set back after the wait."""
        try:
            qmp.wait_event("RESET", SEABIOS_RESET_TIMEOUT, lambda e: bool(e["data"]["guest"]))
        except (QmpError, KeyError, TypeError):
            log.info("%s: no firmware reset followed ours", self.spec.name)

    def _fresh_vars(self) -> None:
        spec = self.spec
        if spec.firmware == "uefi":
            assert spec.ovmf_vars is not None and spec.ovmf_vars_template is not None
            shutil.copyfile(spec.ovmf_vars_template, spec.ovmf_vars)

    # --- MachineBackend ----------------------------------------------------------------
    def power_state(self) -> PowerState:
        with self._lock:
            return "on" if self._running() else "off"

    def power_on(self) -> None:
        with self._lock:
            if self._running():
                return
            if self._child is not None:
                self._child.wait(0)  # collect the exit status of a VM that powered off
            network = self._network_next()
            spec = self.spec
            spec.qmp_socket.unlink(missing_ok=True)
            self._fresh_vars()
            argv = qemu_argv(spec, network_first=network)
            log.info("%s: power on (network boot first: %s)", spec.name, network)
            self._child = netns.spawn(argv, netns=spec.netns, log_file=spec.qemu_log)
            try:
                with self._qmp() as qmp:
                    if network and not (self._persistent and self._boot_device == "network"):
                        # this boot's order is fixed already; later boots use the disk first
                        self._set_nic_bootindex(qmp, NIC_BOOTINDEX)
            except QmpError as exc:
                code = self._child.poll()
                tail = _tail(spec.qemu_log)
                if code is not None:
                    raise BmcError(
                        f"{spec.name}: QEMU exited with code {code} at power on: {tail}",
                        hint=f"see {spec.qemu_log}",
                    ) from None
                raise BmcError(f"{spec.name}: {exc.message}") from None

    def power_off(self) -> None:
        with self._lock:
            child = self._child
            if child is None or not child.running():
                return
            log.info("%s: power off", self.spec.name)
            try:
                with Qmp(self.spec.qmp_socket, timeout=2.0) as qmp:
                    qmp.execute("quit")
            except QmpError:
                child.signal(15)
            if child.wait(QUIT_TIMEOUT) is None:
                child.stop(1.0)

    def power_reset(self) -> None:
        with self._lock:
            if not self._running():
                raise BmcError(f"{self.spec.name} is powered off: nothing to reset")
            network = self._network_next()
            log.info("%s: reset (network boot first: %s)", self.spec.name, network)
            keep_network = self._persistent and self._boot_device == "network"
            try:
                qmp = self._qmp()
            except QmpError as exc:
                raise BmcError(f"{self.spec.name}: reset failed: {exc.message}") from None
            try:
                if network:
                    self._set_nic_bootindex(qmp, PXE_FIRST_BOOTINDEX)
                qmp.execute("system_reset")
            except QmpError as exc:
                qmp.close()
                raise BmcError(f"{self.spec.name}: reset failed: {exc.message}") from None
            if not network or keep_network:
                qmp.close()
                return
            # the answer to the BMC's client must not wait for the firmware: set the NIC's
            # bootindex back in the background, once this boot's order is fixed
            threading.Thread(
                target=self._restore_after_reset, args=(qmp,), name="bootindex", daemon=True
            ).start()

    def _restore_after_reset(self, qmp: Qmp) -> None:
        try:
            qmp.wait_event("RESET", RESET_EVENT_TIMEOUT)
            if self.spec.firmware == "bios":
                self._wait_firmware_reset(qmp)
            self._set_nic_bootindex(qmp, NIC_BOOTINDEX)
            log.info("%s: later boots try the disk first again", self.spec.name)
        except QmpError as exc:
            log.warning("%s: could not set the boot order back: %s", self.spec.name, exc)
        finally:
            qmp.close()

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
                index = PXE_FIRST_BOOTINDEX if device == "network" else NIC_BOOTINDEX
                try:
                    with self._qmp() as qmp:
                        self._set_nic_bootindex(qmp, index)
                except QmpError as exc:
                    raise BmcError(f"{self.spec.name}: {exc.message}") from None

    def close(self) -> None:
        """Power the VM off (the simulator is going away)."""
        self.power_off()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no QEMU log)"
    return " | ".join(text.strip().splitlines()[-lines:]) or "(empty QEMU log)"
