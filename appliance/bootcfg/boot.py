"""iPXE endpoints: ``/boot.ipxe`` (and ``/boot.ipxe.0``) and ``/ipxe``."""

from __future__ import annotations

from aiohttp import web

from appliance.bootcfg import server
from appliance.bootcfg.common import TEXT, labels_of, not_found, refused, service
from appliance.bootcfg.ipxe import BOOTSTRAP, LOCAL_BOOT, boot_script
from appliance.bootcfg.matching import Outcome


async def bootstrap(request: web.Request) -> web.Response:
    """Chain to /ipxe with the machine's identity, filled in by iPXE."""
    return web.Response(text=BOOTSTRAP, content_type=TEXT)


async def ipxe(request: web.Request) -> web.Response:
    verdict = server.serve(service(request), server.IPXE, labels_of(request), request.remote)
    decision = verdict.decision
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
    return web.Response(text=boot_script(profile.boot), content_type=TEXT)
