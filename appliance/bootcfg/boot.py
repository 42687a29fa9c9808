"""iPXE endpoints: ``/boot.ipxe`` (and ``/boot.ipxe.0``) and ``/ipxe``."""

from __future__ import annotations

from aiohttp import web

from appliance.bootcfg.common import TEXT, not_found, observe, refused, service
from appliance.bootcfg.ipxe import BOOTSTRAP, LOCAL_BOOT, boot_script
from appliance.bootcfg.matching import RESCUE_PROFILE, Outcome, decide, is_installer
from appliance.state.model import MachineState


async def bootstrap(request: web.Request) -> web.Response:
    """Chain to /ipxe with the machine's identity, filled in by iPXE."""
    return web.Response(text=BOOTSTRAP, content_type=TEXT)


async def ipxe(request: web.Request) -> web.Response:
    svc = service(request)
    labels, machine = observe(request, "ipxe")
    decision = decide(svc.catalog, labels, machine, ipxe=True)
    if decision.outcome is Outcome.LOCAL:
        return web.Response(text=LOCAL_BOOT, content_type=TEXT)
    if decision.outcome is Outcome.NO_MATCH:
        return not_found(request, decision.reason)
    if decision.outcome is Outcome.REFUSED:
        return refused(request, decision.reason)
    profile = decision.profile
    assert profile is not None
    if profile.boot is None:
        return not_found(request, f"profile {profile.id!r} has no boot section")
    if machine is not None:
        if is_installer(profile) and machine.state is not MachineState.INSTALLING:
            svc.store.set_state(machine.mac, MachineState.INSTALLING, svc.clock())
        elif profile.id == RESCUE_PROFILE and machine.state is not MachineState.RESCUE:
            svc.store.set_state(machine.mac, MachineState.RESCUE, svc.clock())
    return web.Response(text=boot_script(profile.boot), content_type=TEXT)
