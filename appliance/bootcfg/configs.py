"""Config endpoints: ``/ignition``, ``/metadata`` and ``/generic``.

As in matchbox, every failure to produce a config is a 404 (no match, no profile, no such
file, a template that does not render, a Butane file kpc cannot transpile), and the body
says which; a config is rendered completely and checked before a byte of it is sent.
"""

from __future__ import annotations

import json
import logging
from typing import NamedTuple

from aiohttp import web

from appliance.bootcfg import server
from appliance.bootcfg.catalog import (
    Catalog,
    Group,
    Profile,
    Template,
    TemplateKind,
    check_ignition_json,
)
from appliance.bootcfg.common import TEXT, labels_of, not_found, refused, service, shown_query, text
from appliance.bootcfg.context import (
    TemplateFailed,
    matchbox_variables,
    metadata_env,
    render_text,
    template_context,
)
from appliance.bootcfg.gotemplate import GoTemplateError
from appliance.bootcfg.labels import Labels
from appliance.bootcfg.matching import Outcome
from appliance.bootcfg.service import Service
from appliance.errors import KpcError
from appliance.state.model import Machine

log = logging.getLogger("kpc.bootcfg")


class _Match(NamedTuple):
    """A request that matched a group and profile (what every config endpoint starts from)."""

    svc: Service
    catalog: Catalog
    labels: Labels
    machine: Machine | None
    group: Group | None
    profile: Profile | None


async def _match(
    request: web.Request, endpoint: str, *, profile_needed: bool = True
) -> _Match | web.Response:
    """Record the request, match it, and answer 404/403 when nothing may be served.
    /metadata needs only a group (as in matchbox): ``profile_needed=False``."""
    svc = service(request)
    labels = labels_of(request)
    verdict = await svc.registry(server.serve, svc, endpoint, labels, request.remote)
    decision = verdict.decision
    if decision.outcome is Outcome.NO_MATCH:
        if not profile_needed and decision.group is not None:
            return _Match(svc, verdict.catalog, labels, verdict.machine, decision.group, None)
        return not_found(request, decision.reason)
    if decision.outcome is Outcome.REFUSED:
        return refused(request, decision.reason)
    assert decision.profile is not None
    return _Match(svc, verdict.catalog, labels, verdict.machine, decision.group, decision.profile)


def _template(
    request: web.Request, m: _Match, what: str, file_id: str | None
) -> Template | web.Response:
    """The profile's ``what`` file (``ignition`` or ``generic``), or the error answer."""
    assert m.profile is not None
    if not file_id:
        return not_found(request, f"profile {m.profile.id!r} has no {what}_id")
    templates = m.catalog.ignition if what == "ignition" else m.catalog.generic
    template = templates.get(file_id)
    label = "Ignition" if what == "ignition" else what
    if template is None:
        return not_found(request, f"profile {m.profile.id!r}: no {label} file {file_id!r}")
    if template.kind is TemplateKind.REFUSED:
        return _unservable(request, template.problem or f"{template.path} cannot be served")
    return template


def _unservable(request: web.Request, reason: str) -> web.Response:
    """A config that exists but cannot be served: 404 as matchbox, logged as an error."""
    log.error("%s %s: %s", request.path, shown_query(request), reason)
    return text(f"not found: {reason}\n", 404)


def _render_go(template: Template, m: _Match) -> str:
    """A matchbox Go template rendered with matchbox's variables; GoTemplateError."""
    assert template.go is not None
    return template.go.render(matchbox_variables(m.group, m.labels))


async def ignition(request: web.Request) -> web.Response:
    m = await _match(request, server.IGNITION)
    if isinstance(m, web.Response):
        return m
    assert m.profile is not None
    template = _template(request, m, "ignition", m.profile.ignition_id)
    if isinstance(template, web.Response):
        return template
    if template.kind is TemplateKind.IGNITION:
        config = template.parsed
    elif template.kind is TemplateKind.IGNITION_GO:
        try:
            rendered = _render_go(template, m)
        except GoTemplateError as exc:
            return _unservable(request, str(exc))
        try:
            config = json.loads(rendered)
        except (json.JSONDecodeError, RecursionError) as exc:
            return _unservable(request, f"{template.path}: the rendered config is not JSON: {exc}")
        problem = check_ignition_json(config)
        if problem:
            return _unservable(request, f"{template.path}: the rendered config is {problem}")
    else:
        context = template_context(m.svc.site, m.group, m.labels)
        context["bootcfg_token"] = server.installer_token(m.svc, m.profile, m.machine)
        try:
            config = m.svc.renderer.render(template.text, context, source=str(template.path))
        except KpcError as exc:
            return _unservable(request, exc.message)
    body = json.dumps(config, separators=(",", ":"), ensure_ascii=False)
    return web.Response(text=body, content_type="application/json")


async def generic(request: web.Request) -> web.Response:
    m = await _match(request, "generic")
    if isinstance(m, web.Response):
        return m
    assert m.profile is not None
    template = _template(request, m, "generic", m.profile.generic_id)
    if isinstance(template, web.Response):
        return template
    try:
        if template.kind is TemplateKind.TEXT_J2:
            context = template_context(m.svc.site, m.group, m.labels)
            body = render_text(m.svc.jinja, template.text, context, str(template.path))
        else:
            body = _render_go(template, m)
    except (TemplateFailed, GoTemplateError) as exc:
        return _unservable(request, str(exc))
    return web.Response(text=body, content_type=TEXT)


async def metadata(request: web.Request) -> web.Response:
    m = await _match(request, "metadata", profile_needed=False)
    if isinstance(m, web.Response):
        return m
    return web.Response(text=metadata_env(m.group, m.labels), content_type=TEXT)
