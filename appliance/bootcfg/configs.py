"""Config endpoints: ``/ignition``, ``/metadata`` and ``/generic``."""

from __future__ import annotations

import json
from typing import NamedTuple

from aiohttp import web

from appliance.bootcfg import server
from appliance.bootcfg.catalog import Catalog, Group, Profile, Template, TemplateKind
from appliance.bootcfg.common import TEXT, failed, labels_of, not_found, refused, service
from appliance.bootcfg.context import TemplateFailed, metadata_env, render_text, template_context
from appliance.bootcfg.labels import Labels
from appliance.bootcfg.matching import Outcome
from appliance.bootcfg.service import Service
from appliance.errors import KpcError
from appliance.state.model import Machine


class _Match(NamedTuple):
    """A request that matched a group and profile (what every config endpoint starts from)."""

    svc: Service
    catalog: Catalog
    labels: Labels
    machine: Machine | None
    group: Group | None
    profile: Profile


def _match(request: web.Request, endpoint: str) -> _Match | web.Response:
    """Record the request, match it, and answer 404/403 when nothing may be served."""
    svc = service(request)
    labels = labels_of(request)
    verdict = server.serve(svc, endpoint, labels, request.remote)
    decision = verdict.decision
    if decision.outcome is Outcome.NO_MATCH:
        return not_found(request, decision.reason)
    if decision.outcome is Outcome.REFUSED:
        return refused(request, decision.reason)
    assert decision.profile is not None
    return _Match(svc, verdict.catalog, labels, verdict.machine, decision.group, decision.profile)


def _template(
    request: web.Request, m: _Match, what: str, file_id: str | None
) -> Template | web.Response:
    """The profile's ``what`` file (``ignition`` or ``generic``), or the error answer."""
    if not file_id:
        return not_found(request, f"profile {m.profile.id!r} has no {what}_id")
    templates = m.catalog.ignition if what == "ignition" else m.catalog.generic
    template = templates.get(file_id)
    label = "Ignition" if what == "ignition" else what
    if template is None:
        return not_found(request, f"profile {m.profile.id!r}: no {label} file {file_id!r}")
    if template.kind is TemplateKind.REFUSED:
        return failed(request, template.problem or f"{template.path} cannot be served")
    return template


async def ignition(request: web.Request) -> web.Response:
    m = _match(request, server.IGNITION)
    if isinstance(m, web.Response):
        return m
    template = _template(request, m, "ignition", m.profile.ignition_id)
    if isinstance(template, web.Response):
        return template
    if template.kind is TemplateKind.IGNITION:
        config = template.parsed
    else:
        context = template_context(m.svc.site, m.group, m.labels)
        try:
            config = m.svc.renderer.render(template.text, context, source=str(template.path))
        except KpcError as exc:
            return failed(request, exc.message)
    return web.Response(text=json.dumps(config), content_type="application/json")


async def generic(request: web.Request) -> web.Response:
    m = _match(request, "generic")
    if isinstance(m, web.Response):
        return m
    template = _template(request, m, "generic", m.profile.generic_id)
    if isinstance(template, web.Response):
        return template
    body = template.text
    if template.kind is TemplateKind.TEXT_J2:
        context = template_context(m.svc.site, m.group, m.labels)
        try:
            body = render_text(m.svc.jinja, template.text, context, str(template.path))
        except TemplateFailed as exc:
            return failed(request, str(exc))
    return web.Response(text=body, content_type=TEXT)


async def metadata(request: web.Request) -> web.Response:
    m = _match(request, "metadata")
    if isinstance(m, web.Response):
        return m
    return web.Response(text=metadata_env(m.group, m.labels), content_type=TEXT)
