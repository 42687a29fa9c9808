"""What each Redfish job asks a BMC, in order, for each answer (no network)."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.bmc import redfish_jobs as rj
from appliance.bmc.actions import BootDevice, BootMode, PowerAction
from appliance.bmc.jobs import Credentials, Failure, HostError, Target

TARGET = Target("192.0.2.1", Credentials("admin", "x"))
ROOT = rj.Reply(200, {"Systems": {"@odata.id": "/redfish/v1/Systems"}})
SYSTEMS = rj.Reply(200, {"Members": [{"@odata.id": "/redfish/v1/Systems/S1"}]})
RESET = "/redfish/v1/Systems/S1/Actions/ComputerSystem.Reset"
NO_CONTENT = rj.Reply(204, None)


def system(power: str = "On", **extra: Any) -> rj.Reply:
    body: dict[str, Any] = {
        "PowerState": power,
        "Boot": {"BootSourceOverrideTarget@Redfish.AllowableValues": ["Pxe", "Hdd", "Cd"]},
        "Actions": {
            "#ComputerSystem.Reset": {
                "target": RESET,
                "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "ForceRestart"],
            }
        },
        **extra,
    }
    return rj.Reply(200, body, {"ETag": 'W/"7"'})


def play(job: rj.Job, answers: list[rj.Reply]) -> tuple[list[rj.Request], rj.Done]:
    asked = [next(job)]
    try:
        for answer in answers:
            asked.append(job.send(answer))
    except StopIteration as stop:
        return asked, stop.value
    raise AssertionError(f"job wanted more answers after {asked}")


def test_pxe_on_a_running_machine_follows_links_and_resets() -> None:
    asked, done = play(rj.boot_and_reset(BootDevice.PXE, BootMode.UEFI)(TARGET),
                       [ROOT, SYSTEMS, system(), NO_CONTENT, NO_CONTENT])  # fmt: skip
    assert [(r.method, r.path) for r in asked] == [
        ("GET", "/redfish/v1/"),
        ("GET", "/redfish/v1/Systems"),
        ("GET", "/redfish/v1/Systems/S1"),
        ("PATCH", "/redfish/v1/Systems/S1"),
        ("POST", RESET),
    ]
    assert asked[3].body == {
        "Boot": {
            "BootSourceOverrideTarget": "Pxe",
            "BootSourceOverrideEnabled": "Once",
            "BootSourceOverrideMode": "UEFI",
        }
    }
    assert asked[3].headers == {"If-Match": 'W/"7"'}
    assert asked[4].body == {"ResetType": "ForceRestart"} and not asked[4].repeatable
    assert done.result == "PXE boot: reset"


def test_reset_type_comes_from_the_action_info_when_not_inline() -> None:
    info = "/redfish/v1/Systems/S1/ResetActionInfo"
    reply = system()
    reply.body["Actions"]["#ComputerSystem.Reset"] = {"target": RESET, "@Redfish.ActionInfo": info}
    parameters = {"Parameters": [{"Name": "ResetType", "AllowableValues": ["GracefulRestart"]}]}
    asked, _done = play(rj.power_job(PowerAction.RESET)(TARGET),
                       [ROOT, SYSTEMS, reply, rj.Reply(200, parameters), NO_CONTENT])  # fmt: skip
    assert asked[3].path == info
    assert asked[4].body == {"ResetType": "GracefulRestart"}


def test_unsupported_reset_type_and_boot_target_name_what_is_offered() -> None:
    job = rj.power_job(PowerAction.CYCLE)(TARGET)
    reply = system()
    reply.body["Actions"]["#ComputerSystem.Reset"]["ResetType@Redfish.AllowableValues"] = ["On"]
    with pytest.raises(HostError) as caught:
        play(job, [ROOT, SYSTEMS, reply])
    assert caught.value.failure is Failure.NOT_SUPPORTED
    assert "offers ResetType On" in caught.value.message
    with pytest.raises(HostError, match="UefiHttp is not offered"):
        play(rj.bootdev_job(BootDevice.HTTP, persistent=False, mode=None)(TARGET),
             [ROOT, SYSTEMS, system()])  # fmt: skip


def test_a_machine_that_is_off_is_powered_on_and_many_systems_are_refused() -> None:
    asked, done = play(rj.boot_and_reset(BootDevice.PXE, None)(TARGET),
                       [ROOT, SYSTEMS, system("Off"), NO_CONTENT, NO_CONTENT])  # fmt: skip
    assert asked[-1].body == {"ResetType": "On"} and done.result == "PXE boot: powered on"
    two = rj.Reply(200, {"Members": [{"@odata.id": "/a"}, {"@odata.id": "/b"}]})
    with pytest.raises(HostError, match="manages 2 systems"):
        play(rj.power_job(PowerAction.STATUS)(TARGET), [ROOT, two])


def test_inventory_collects_normalised_macs() -> None:
    nics = rj.Reply(200, {"Members": [{"@odata.id": "/n1"}, {"@odata.id": "/n2"}]})
    reply = system(
        Manufacturer="Dell Inc.", Model="R650", SerialNumber="SN1", UUID="u-1",
        EthernetInterfaces={"@odata.id": "/nics"},
    )  # fmt: skip
    _asked, done = play(rj.inventory_job(TARGET), [
        ROOT, SYSTEMS, reply, nics,
        rj.Reply(200, {"MACAddress": "AA-BB-CC-DD-EE-01"}),
        rj.Reply(200, {"MACAddress": "", "PermanentMACAddress": "aabbccddee02"}),
    ])  # fmt: skip
    assert done.inventory is not None
    assert done.inventory.macs == ("aa:bb:cc:dd:ee:01", "aa:bb:cc:dd:ee:02")
    assert (done.inventory.model, done.inventory.serial) == ("R650", "SN1")
    assert done.result == "Dell Inc. R650, 2 MAC(s)"


def test_error_replies_carry_the_bmcs_message() -> None:
    reply = rj.Reply(400, {"error": {"@Message.ExtendedInfo": [{"Message": "no such value"}]}})
    assert rj.describe_error(reply) == "HTTP 400: no such value"
