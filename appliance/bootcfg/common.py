"""Request plumbing shared by the endpoint modules: the service key, label parsing and
plain-text answers."""

from __future__ import annotations

import logging

from aiohttp import web

from appliance.bootcfg.labels import LabelError, Labels, parse_labels
from appliance.bootcfg.service import Service

log = logging.getLogger("kpc.bootcfg")

SERVICE = web.AppKey("service", Service)
TEXT = "text/plain"


def service(request: web.Request) -> Service:
    return request.app[SERVICE]


def labels_of(request: web.Request) -> Labels:
    """The request's validated labels, or 400 with the reason."""
    try:
        return parse_labels(request.rel_url.query.items(), request.rel_url.raw_query_string)
    except LabelError as exc:
        log.warning("%s %s from %s refused: %s", request.method, request.path, request.remote, exc)
        raise web.HTTPBadRequest(text=f"bad request: {exc}\n", content_type=TEXT) from None


def shown_query(request: web.Request) -> str:
    """The raw query for a log line: quoted and escaped (no CR/LF can forge a line)."""
    raw = request.rel_url.raw_query_string
    return ascii(raw[:300] + ("..." if len(raw) > 300 else "")) if raw else "-"


def text(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type=TEXT)


def not_found(request: web.Request, reason: str) -> web.Response:
    log.info("%s %s: %s", request.path, shown_query(request), reason)
    return text(f"not found: {reason}\n", 404)


def refused(request: web.Request, reason: str) -> web.Response:
    log.warning("%s %s refused: %s", request.path, shown_query(request), reason)
    return text(f"refused: {reason}\n", 403)


def failed(request: web.Request, reason: str) -> web.Response:
    log.error("%s %s failed: %s", request.path, shown_query(request), reason)
    return text(f"error: {reason}\n", 500)
