"""IPMI power and boot-device control: what each host is asked, in order.

Each action (``appliance.bmc.actions``) is a job (see ``appliance.drivers.ipmi``): a
generator that yields IPMI commands and decides the next one from the answers. The jobs are
pure; the driver runs them over the network, in parallel, with timeouts and retries.

- ``status``: Get Chassis Status.
- ``on`` / ``off``: nothing if the machine is already so, else Chassis Control.
- ``cycle`` / ``reset``: only for a machine that is on (a BMC refuses them otherwise).
- ``bootdev``: Set System Boot Options, parameter 5 (boot flags), one-time or persistent.
- ``pxe``: one-time PXE boot, then reset if on, or power on if off — what ``pxe-all`` does.
"""

from __future__ import annotations

from appliance.bmc import protocol as p
from appliance.bmc.actions import Action, BootDevice, BootMode, Kind, PowerAction
from appliance.bmc.jobs import Failure, HostError, Target
from appliance.drivers.ipmi import Command, Job, JobFactory

GET_STATUS = Command(p.NETFN_CHASSIS, p.CMD_GET_CHASSIS_STATUS, label="read power state")


def chassis_control(directive: int, label: str, *, repeatable: bool) -> Command:
    return Command(
        p.NETFN_CHASSIS,
        p.CMD_CHASSIS_CONTROL,
        bytes((directive,)),
        label=label,
        changes_state=True,
        repeatable=repeatable,
    )


POWER_ON = chassis_control(p.CHASSIS_POWER_UP, "power on", repeatable=True)
POWER_OFF = chassis_control(p.CHASSIS_POWER_DOWN, "power off", repeatable=True)
POWER_CYCLE = chassis_control(p.CHASSIS_POWER_CYCLE, "power cycle", repeatable=False)
RESET = chassis_control(p.CHASSIS_HARD_RESET, "reset", repeatable=False)

_SELECTORS = {
    BootDevice.PXE: p.BOOT_DEVICE_PXE,
    BootDevice.DISK: p.BOOT_DEVICE_DISK,
    BootDevice.CD: p.BOOT_DEVICE_CD,  # "force boot from CD/DVD": a virtual or real drive
}


def set_boot_device(
    device: BootDevice, *, persistent: bool, mode: BootMode | None = None
) -> Command:
    """Set System Boot Options (§28.12), parameter 5: boot flags valid, device selector
    (and the EFI boot type bit when a mode is given)."""
    flags = p.BOOT_FLAGS_VALID | (p.BOOT_FLAGS_PERSISTENT if persistent else 0)
    if mode is BootMode.UEFI:
        flags |= p.BOOT_FLAGS_EFI
    selector = _SELECTORS[device] << p.BOOT_DEVICE_SHIFT
    when = "every boot" if persistent else "next boot"
    return Command(
        p.NETFN_CHASSIS,
        p.CMD_SET_SYSTEM_BOOT_OPTIONS,
        bytes((p.BOOT_PARAM_BOOT_FLAGS, flags, selector, 0, 0, 0)),
        label=f"set boot device {device.value} ({when})",
        changes_state=True,
        repeatable=True,
    )


def _is_on(data: bytes) -> bool:
    if not data:
        raise HostError(Failure.ERROR, "the BMC sent an empty chassis status")
    return bool(data[0] & p.CHASSIS_STATUS_POWER_ON)


def status_job(target: Target) -> Job:
    status = yield GET_STATUS
    return "on" if _is_on(status.data) else "off"


def power_job(action: PowerAction) -> JobFactory:
    """The job for one ``kpc bmc power`` action."""
    if action is PowerAction.STATUS:
        return status_job

    def job(target: Target) -> Job:
        on = _is_on((yield GET_STATUS).data)
        if action is PowerAction.ON:
            if on:
                return "already on"
            yield POWER_ON
            return "powered on"
        if action is PowerAction.OFF:
            if not on:
                return "already off"
            yield POWER_OFF
            return "powered off"
        if not on:
            raise HostError(
                Failure.NOT_SUPPORTED,
                f"the machine is off: nothing to {action.value} (use 'kpc bmc power on')",
            )
        yield POWER_CYCLE if action is PowerAction.CYCLE else RESET
        return "power cycled" if action is PowerAction.CYCLE else "reset"

    return job


def bootdev_job(
    device: BootDevice, *, persistent: bool, mode: BootMode | None = None
) -> JobFactory:
    command = set_boot_device(device, persistent=persistent, mode=mode)

    def job(target: Target) -> Job:
        yield command
        return f"boot device {device.value} ({'every boot' if persistent else 'next boot'})"

    return job


def pxe_job(target: Target, mode: BootMode | None = None) -> Job:
    """One-time PXE boot (in ``mode`` if given), then reset (or power on a machine that is
    off)."""
    on = _is_on((yield GET_STATUS).data)
    yield set_boot_device(BootDevice.PXE, persistent=False, mode=mode)
    if on:
        yield RESET
        return "PXE boot: reset"
    yield POWER_ON
    return "PXE boot: powered on"


def unsupported(why: str) -> JobFactory:
    def job(target: Target) -> Job:
        raise HostError(Failure.NOT_SUPPORTED, why)
        yield GET_STATUS  # a generator that never yields

    return job


def job_for(action: Action) -> JobFactory:
    """The IPMI job of a protocol-neutral action."""
    if action.kind is Kind.POWER:
        return power_job(action.power or PowerAction.STATUS)
    if action.kind is Kind.PXE:
        mode = action.mode
        return pxe_job if mode is None else lambda target: pxe_job(target, mode)
    if action.kind is Kind.BOOTDEV and action.device in _SELECTORS:
        assert action.device is not None
        return bootdev_job(action.device, persistent=action.persistent, mode=action.mode)
    if action.kind is Kind.BOOTDEV:
        return unsupported(f"boot device {action.device} is offered over Redfish only")
    return unsupported(f"{action.kind.value} needs Redfish (this BMC is driven over IPMI)")
