"""Machine endpoints: ``/healthz``, ``POST /install-complete`` and ``POST /checkin``."""

from __future__ import annotations

import hmac
import json
import logging

from aiohttp import web

from appliance.bootcfg import server
from appliance.bootcfg.common import TEXT, labels_of, service, text
from appliance.bootcfg.facts import FactsError, validate_facts
from appliance.errors import StateError
from appliance.state.model import Machine

log = logging.getLogger("kpc.bootcfg")


def _authorize(request: web.Request) -> None:
    token = service(request).token
    if token is None:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        log.warning("%s from %s: missing or wrong bearer token", request.path, request.remote)
        raise web.HTTPUnauthorized(
            text="unauthorized: this endpoint needs 'Authorization: Bearer TOKEN'\n",
            content_type=TEXT,
            headers={"WWW-Authenticate": 'Bearer realm="kpc-bootcfg"'},
        )


def _required_mac(request: web.Request) -> str:
    labels = labels_of(request)
    if labels.mac is None:
        raise web.HTTPBadRequest(text="bad request: mac= is required\n", content_type=TEXT)
    return labels.mac


async def _body(request: web.Request) -> bytes:
    limit = service(request).max_body
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    data = bytearray()
    async for chunk in request.content.iter_chunked(65536):
        data += chunk
        if len(data) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
    return bytes(data)


def _summary(machine: Machine) -> web.Response:
    return web.json_response(
        {"mac": machine.mac, "state": machine.state.value, "boot": machine.boot.value}
    )


async def healthz(request: web.Request) -> web.Response:
    svc = service(request)
    try:
        await svc.registry(svc.store.check_writable)
    except StateError as exc:
        return web.Response(
            text=f"unhealthy: {exc.message}\n",
            status=503,
            content_type=TEXT,
            headers={"Retry-After": "5"},
        )
    detail = service(request).catalog.health()  # serving, but some files are broken
    return text("ok\n" + (f"{detail}\n" if detail else ""))


async def install_complete(request: web.Request) -> web.Response:
    _authorize(request)
    mac = _required_mac(request)
    await _body(request)  # may be empty; read (bounded) and ignored
    svc = service(request)
    machine = await svc.registry(server.install_complete, svc, mac, request.remote)
    log.info("%s: install complete; boot mode is now local", mac)
    return _summary(machine)


async def checkin(request: web.Request) -> web.Response:
    _authorize(request)
    mac = _required_mac(request)
    body = await _body(request)
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(
            text=f"bad request: the body is not JSON: {exc}\n", content_type=TEXT
        ) from None
    try:
        facts = validate_facts(data)
    except FactsError as exc:
        log.warning("%s from %s: facts refused: %s", mac, request.remote, exc)
        raise web.HTTPBadRequest(text=f"bad request: {exc}\n", content_type=TEXT) from None
    svc = service(request)
    machine = await svc.registry(server.checkin, svc, mac, facts, request.remote)
    return _summary(machine)
