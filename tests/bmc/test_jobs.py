"""What each job asks a BMC, in order, for each answer (no network)."""

from __future__ import annotations

import pytest

from appliance.bmc import ipmi_jobs as power
from appliance.bmc import protocol as p
from appliance.bmc.actions import Action, BootDevice, BootMode, Kind, PowerAction
from appliance.bmc.jobs import Credentials, Failure, HostError, Target
from appliance.drivers.ipmi import Command, CommandError, Job, Response

TARGET = Target("192.0.2.1", Credentials("admin", "x"))
ON, OFF = Response(0, b"\x01\x00\x00"), Response(0, b"\x00\x00\x00")
OK = Response(0, b"")


def play(job: Job, answers: list[Response]) -> tuple[list[Command], str]:
    """Feed answers one by one; the commands asked and the job's result."""
    asked = [next(job)]
    try:
        for answer in answers:
            asked.append(job.send(answer))
    except StopIteration as stop:
        return asked, str(stop.value)
    raise AssertionError(f"job wanted more answers after {asked}")


def test_pxe_on_a_running_machine_sets_one_time_pxe_then_resets() -> None:
    asked, result = play(power.pxe_job(TARGET), [ON, OK, OK])
    assert [c.label for c in asked] == [
        "read power state",
        "set boot device pxe (next boot)",
        "reset",
    ]
    bootdev = asked[1]
    # Set System Boot Options, parameter 5: valid, one-time (no persistent bit), PXE (1 << 2)
    assert (bootdev.netfn, bootdev.cmd, bootdev.data) == (0x00, 0x08, bytes((5, 0x80, 4, 0, 0, 0)))
    assert asked[2].data == bytes((p.CHASSIS_HARD_RESET,)) and not asked[2].repeatable
    assert result == "PXE boot: reset"


def test_pxe_on_a_machine_that_is_off_powers_it_on() -> None:
    asked, result = play(power.pxe_job(TARGET), [OFF, OK, OK])
    assert asked[2].data == bytes((p.CHASSIS_POWER_UP,))
    assert result == "PXE boot: powered on"


def test_persistent_disk_boot() -> None:
    asked, result = play(power.bootdev_job(BootDevice.DISK, persistent=True)(TARGET), [OK])
    assert asked[0].data == bytes((5, 0xC0, 8, 0, 0, 0))
    assert result == "boot device disk (every boot)"


@pytest.mark.parametrize(
    ("action", "state", "expected_commands", "result"),
    [
        (PowerAction.STATUS, ON, [], "on"),
        (PowerAction.ON, ON, [], "already on"),
        (PowerAction.ON, OFF, [b"\x01"], "powered on"),
        (PowerAction.OFF, ON, [b"\x00"], "powered off"),
        (PowerAction.OFF, OFF, [], "already off"),
        (PowerAction.CYCLE, ON, [b"\x02"], "power cycled"),
        (PowerAction.RESET, ON, [b"\x03"], "reset"),
    ],
)
def test_power_actions(
    action: PowerAction,
    state: Response,
    expected_commands: list[bytes],
    result: str,
) -> None:
    answers = [state] + [OK] * len(expected_commands)
    asked, got = play(power.power_job(action)(TARGET), answers)
    assert asked[0] == power.GET_STATUS
    assert [c.data for c in asked[1:]] == expected_commands
    assert got == result


@pytest.mark.parametrize("action", [PowerAction.CYCLE, PowerAction.RESET])
def test_reset_and_cycle_refuse_a_machine_that_is_off(action: PowerAction) -> None:
    job = power.power_job(action)(TARGET)
    next(job)
    with pytest.raises(HostError) as info:
        job.send(OFF)
    assert info.value.failure is Failure.NOT_SUPPORTED
    assert "the machine is off" in info.value.message


def test_a_command_error_ends_the_job_unless_caught() -> None:
    job = power.pxe_job(TARGET)
    next(job)
    bootdev = job.send(ON)
    with pytest.raises(CommandError) as info:
        job.throw(CommandError(bootdev, p.CC_INVALID_COMMAND))
    assert "0xC1 (invalid command (not supported))" in str(info.value)


def test_pxe_in_uefi_mode_sets_the_efi_boot_flag() -> None:
    job = power.job_for(Action(Kind.PXE, mode=BootMode.UEFI))(TARGET)
    asked, result = play(job, [ON, OK, OK])
    assert asked[1].data[1] == p.BOOT_FLAGS_VALID | p.BOOT_FLAGS_EFI
    assert result == "PXE boot: reset"
