"""Machine endpoints: ``/healthz``, ``POST /install-complete`` and ``POST /checkin``."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import Any

from aiohttp import web

from appliance.bootcfg import server
from appliance.bootcfg.common import TEXT, labels_of, service, text
from appliance.bootcfg.facts import FactsError, validate_facts
from appliance.errors import StateError
from appliance.state.model import Machine

log = logging.getLogger("kpc.bootcfg")
BODY_DEADLINE = 10.0  # seconds a node may take to send a request body (slow bodies: 408)


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
    try:
        async with asyncio.timeout(BODY_DEADLINE):
            async for chunk in request.content.iter_chunked(65536):
                data += chunk
                if len(data) > limit:
                    raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
    except TimeoutError:
        log.warning(
            "%s from %s: body not received within %g s", request.path, request.remote, BODY_DEADLINE
        )
        raise web.HTTPRequestTimeout(
            text=f"request timeout: the body did not arrive within {BODY_DEADLINE:g} s\n",
            content_type=TEXT,
        ) from None
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


def _bearer(request: web.Request) -> str | None:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" and given.strip() else None


def _bad(request: web.Request, reason: str) -> web.HTTPBadRequest:
    log.warning("%s from %s refused: %s", request.path, request.remote, ascii(reason))
    return web.HTTPBadRequest(text=f"bad request: {reason}\n", content_type=TEXT)


def _forbidden(request: web.Request, mac: str, exc: server.Forbidden) -> web.HTTPForbidden:
    log.warning("%s %s from %s refused: %s", request.path, mac, request.remote, exc.reason)
    return web.HTTPForbidden(text=f"forbidden: {exc.reason}\n", content_type=TEXT)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def parse_json(body: bytes) -> Any:
    """A request body as JSON (RFC 8259: UTF-8, no NaN/Infinity); ValueError saying what is
    wrong: not UTF-8, not JSON, nested too deeply, a number too long or out of range."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise ValueError("the body's JSON is nested too deeply") from None
    except ValueError as exc:  # int digits limit, NaN, out-of-range floats
        raise ValueError(f"the body's JSON has an unusable number: {exc}") from None


async def install_complete(request: web.Request) -> web.Response:
    svc = service(request)
    if svc.node_auth != server.PER_MACHINE:
        _authorize(request)
    mac = _required_mac(request)
    body = await _body(request)
    host_key: str | None = None
    if body.strip():
        try:
            data = parse_json(body)
        except ValueError as exc:
            raise _bad(request, str(exc)) from None
        if not isinstance(data, dict) or not isinstance(data.get("host_key", ""), str):
            raise _bad(request, 'expected a JSON object {"host_key": "TYPE BASE64"}')
        host_key = data.get("host_key")
    try:
        machine = await svc.registry(
            server.install_complete,
            svc,
            mac,
            request.remote,
            token=_bearer(request),
            host_key=host_key,
        )
    except server.Forbidden as exc:
        raise _forbidden(request, mac, exc) from None
    except ValueError as exc:  # a malformed host key
        raise _bad(request, str(exc)) from None
    log.info("%s: install complete; boot mode is now local", mac)
    return _summary(machine)


def _signed(request: web.Request) -> server.SignedCheckin | None:
    time_header = request.headers.get("X-Kpc-Time")
    signature = request.headers.get("X-Kpc-Signature")
    if time_header is None and signature is None:
        return None
    if time_header is None or signature is None:
        raise _bad(request, "a signed check-in needs both X-Kpc-Time and X-Kpc-Signature")
    if not time_header.isdigit() or len(time_header) > 12:
        raise _bad(request, "X-Kpc-Time: expected seconds since the epoch (digits only)")
    return server.SignedCheckin(int(time_header), signature)


async def checkin(request: web.Request) -> web.Response:
    svc = service(request)
    if svc.node_auth != server.PER_MACHINE:
        _authorize(request)
    mac = _required_mac(request)
    signed = _signed(request)
    body = await _body(request)
    try:
        data = parse_json(body)
    except ValueError as exc:
        raise _bad(request, str(exc)) from None
    try:
        facts = validate_facts(data)
    except FactsError as exc:
        raise _bad(request, str(exc)) from None
    try:
        machine = await svc.registry(
            server.checkin, svc, mac, facts, request.remote, body=body, signed=signed
        )
    except server.Forbidden as exc:
        raise _forbidden(request, mac, exc) from None
    return _summary(machine)
