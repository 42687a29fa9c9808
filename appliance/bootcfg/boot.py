"""Boot endpoints: ``/`` (matchbox's probe answer), ``/boot.ipxe`` (and ``/boot.ipxe.0``),
``/ipxe`` and ``/grub``."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from appliance.bootcfg import server
from appliance.bootcfg.catalog import Boot
from appliance.bootcfg.common import TEXT, labels_of, not_found, refused, service
from appliance.bootcfg.ipxe import BOOTSTRAP, GRUB_LOCAL_BOOT, LOCAL_BOOT, boot_script, grub_script
from appliance.bootcfg.matching import Outcome


async def bootstrap(request: web.Request) -> web.Response:
    """Chain to /ipxe with the machine's identity, filled in by iPXE."""
    return web.Response(text=BOOTSTRAP, content_type=TEXT)


async def home(request: web.Request) -> web.Response:
    """matchbox answers its own name at / (its probes and docs use it)."""
    return web.Response(text="matchbox\n", content_type=TEXT)


async def ipxe(request: web.Request) -> web.Response:
    return await _boot(request, server.IPXE, boot_script, LOCAL_BOOT)


async def grub(request: web.Request) -> web.Response:
    return await _boot(request, server.GRUB, grub_script, GRUB_LOCAL_BOOT)


async def _boot(
    request: web.Request, endpoint: str, script: Callable[[Boot], str], local: str
) -> web.Response:
    svc = service(request)
    labels = labels_of(request)
    verdict = await svc.registry(server.serve, svc, endpoint, labels, request.remote)
    decision = verdict.decision
    if decision.outcome is Outcome.LOCAL:
        return web.Response(text=local, content_type=TEXT)
    if decision.outcome is Outcome.NO_MATCH:
        return not_found(request, decision.reason)
    if decision.outcome is Outcome.REFUSED:
        return refused(request, decision.reason)
    profile = decision.profile
    assert profile is not None
    if profile.boot is None:
        return not_found(request, f"profile {profile.id!r} has no boot section")
    return web.Response(text=script(profile.boot), content_type=TEXT)
