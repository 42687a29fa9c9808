"""Config endpoints: ``/ignition``, ``/metadata`` and ``/generic``."""

from __future__ import annotations

import json

from aiohttp import web

from appliance.bootcfg.catalog import TemplateKind
from appliance.bootcfg.common import TEXT, failed, not_found, observe, refused, service
from appliance.bootcfg.context import TemplateFailed, metadata_env, render_text, template_context
from appliance.bootcfg.matching import Decision, Outcome, decide, is_installer
from appliance.errors import KpcError
from appliance.state.model import MachineState


def _answer_problem(request: web.Request, decision: Decision) -> web.Response | None:
    if decision.outcome is Outcome.NO_MATCH:
        return not_found(request, decision.reason)
    if decision.outcome is Outcome.REFUSED:
        return refused(request, decision.reason)
    return None


async def ignition(request: web.Request) -> web.Response:
    svc = service(request)
    labels, machine = observe(request, "ignition")
    catalog = svc.catalog
    decision = decide(catalog, labels, machine, ipxe=False)
    problem = _answer_problem(request, decision)
    if problem is not None:
        return problem
    profile = decision.profile
    assert profile is not None
    if not profile.ignition_id:
        return not_found(request, f"profile {profile.id!r} has no ignition_id")
    template = catalog.ignition.get(profile.ignition_id)
    if template is None:
        return not_found(
            request, f"profile {profile.id!r}: no Ignition file {profile.ignition_id!r}"
        )
    if template.kind is TemplateKind.REFUSED:
        return failed(request, template.problem or f"{template.path} cannot be served")
    if template.kind is TemplateKind.IGNITION:
        config = template.parsed
    else:
        context = template_context(svc.site, decision.group, labels)
        try:
            config = svc.renderer.render(template.text, context, source=str(template.path))
        except KpcError as exc:
            return failed(request, exc.message)
    installing = machine is not None and is_installer(profile)
    if installing and machine is not None and machine.state is not MachineState.INSTALLING:
        svc.store.set_state(machine.mac, MachineState.INSTALLING, svc.clock())
    return web.Response(text=json.dumps(config), content_type="application/json")


async def generic(request: web.Request) -> web.Response:
    svc = service(request)
    labels, machine = observe(request, "generic")
    catalog = svc.catalog
    decision = decide(catalog, labels, machine, ipxe=False)
    problem = _answer_problem(request, decision)
    if problem is not None:
        return problem
    profile = decision.profile
    assert profile is not None
    if not profile.generic_id:
        return not_found(request, f"profile {profile.id!r} has no generic_id")
    template = catalog.generic.get(profile.generic_id)
    if template is None:
        return not_found(request, f"profile {profile.id!r}: no generic file {profile.generic_id!r}")
    if template.kind is TemplateKind.REFUSED:
        return failed(request, template.problem or f"{template.path} cannot be served")
    body = template.text
    if template.kind is TemplateKind.TEXT_J2:
        context = template_context(svc.site, decision.group, labels)
        try:
            body = render_text(svc.jinja, template.text, context, str(template.path))
        except TemplateFailed as exc:
            return failed(request, str(exc))
    return web.Response(text=body, content_type=TEXT)


async def metadata(request: web.Request) -> web.Response:
    svc = service(request)
    labels, machine = observe(request, "metadata")
    decision = decide(svc.catalog, labels, machine, ipxe=False)
    problem = _answer_problem(request, decision)
    if problem is not None:
        return problem
    return web.Response(text=metadata_env(decision.group, labels), content_type=TEXT)
