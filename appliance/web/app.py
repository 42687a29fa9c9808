"""The web application: authentication, pages, the live feed, actions.

Every route but ``/login``, ``/static/`` and ``/healthz`` needs a logged-in operator (or a
trusted proxy's user); pages redirect to the login form, the API and the feed answer 401.
Every POST carries the session's CSRF token and, when the browser sends one, an Origin of
this server. Pages are rendered with autoescaping and a strict Content-Security-Policy (no
inline script or style), and nothing rendered ever contains a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from appliance.config import SiteConfig
from appliance.errors import ConfigError, KpcError
from appliance.mac import normalize_mac
from appliance.state.model import Bmc
from appliance.state.store import MachineStore
from appliance.web import actions as acts
from appliance.web import logs
from appliance.web.auth import SESSION_COOKIE, USER_HELP, USER_RE, Auth, Throttle
from appliance.web.feed import Rack
from appliance.web.rack import GROUPINGS, STATES, age, counts, grouped, matches

log = logging.getLogger("kpc.web")

HERE = Path(__file__).parent
PUBLIC = ("/login", "/static/", "/healthz", "/favicon.ico")
HEARTBEAT = 15.0  # seconds between SSE comments that keep proxies from closing the stream
POLL = 0.1  # seconds between looks at the registry's event log
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass
class Site:
    """What the handlers share."""

    config: SiteConfig
    store: MachineStore
    auth: Auth
    environ: Mapping[str, str]
    clock: Callable[[], float] = time.time
    actions: bool = False
    throttle: Throttle = field(default_factory=Throttle)
    rack: Rack = field(init=False)
    templates: jinja2.Environment = field(init=False)

    def __post_init__(self) -> None:
        self.rack = Rack(self.store, self.clock, dict(self.config.web.stuck_after))
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters["age"] = age
        self.templates.filters["when"] = _when
        self.templates.globals["static"] = _static_url()


SITE = web.AppKey("site", Site)
USER = web.RequestKey("kpc.user", str)
SESSION = web.RequestKey("kpc.session", str)


def _static_url() -> Callable[[str], str]:
    """URLs of the static files with a content hash, so browsers cache them safely."""
    digest = hashlib.sha256()
    for path in sorted((HERE / "static").iterdir()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    version = digest.hexdigest()[:12]
    return lambda name: f"/static/{name}?v={version}"


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def site(request: web.Request) -> Site:
    return request.app[SITE]


# --- middleware ------------------------------------------------------------------------------


def _identify(request: web.Request, s: Site) -> tuple[str | None, str]:
    """(user, the string CSRF tokens are bound to) for this request."""
    if s.auth.proxy_header is not None:
        user = s.auth.proxy_user(request.remote, request.headers.get(s.auth.proxy_header))
        return user, f"proxy:{user}"
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return s.auth.session_user(cookie, s.clock()), cookie


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:  # not a browser's cross-site form (those always send Origin)
        return True
    return urlsplit(origin).netloc == request.host


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    s = site(request)
    if request.method == "POST" and not _same_origin(request):
        raise web.HTTPForbidden(text="refused: the form came from another site\n")
    if not request.path.startswith(PUBLIC):
        user, session = _identify(request, s)
        if user is None:
            if request.path.startswith(("/api/", "/events")):
                raise web.HTTPUnauthorized(
                    text="log in first\n", headers={"WWW-Authenticate": 'Cookie realm="kpc"'}
                )
            if s.auth.proxy_header is not None:
                raise web.HTTPUnauthorized(text="no user from the reverse proxy\n")
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
        request[USER] = user
        request[SESSION] = session
        if request.method == "POST":
            form = await request.post()
            if not s.auth.check_csrf(session, str(form.get("csrf", ""))):
                raise web.HTTPForbidden(text="refused: missing or stale form token; reload\n")
    response = await handler(request)
    return response


@web.middleware
async def _headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _secure(exc.headers)
        raise
    except KpcError as exc:
        log.error("%s: %s", request.path, exc.message)
        response = _page(request, "error.html", {"message": exc.message, "hint": exc.hint}, 500)
    if not response.prepared:
        _secure(response.headers)
    return response


def _secure(headers: MutableMapping[str, str]) -> None:
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")  # no-referrer makes Origin "null"
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Cache-Control", "no-store")


# --- rendering -------------------------------------------------------------------------------


def _page(
    request: web.Request, name: str, context: Mapping[str, Any], status: int = 200
) -> web.Response:
    s = site(request)
    user = request.get(USER)
    session = request.get(SESSION)
    base = {
        "user": user,
        "csrf": s.auth.csrf_token(str(session)) if user else "",
        "password_login": s.auth.password is not None,
        "path": request.path,
    }
    html = s.templates.get_template(name).render({**base, **context})
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def _mac(request: web.Request) -> str:
    try:
        return normalize_mac(request.match_info["mac"])
    except ValueError:
        raise web.HTTPNotFound(text="not a MAC address\n") from None


# --- login -----------------------------------------------------------------------------------


def _next(value: object) -> str:
    text = str(value or "/")
    return text if text.startswith("/") and not text.startswith("//") else "/"


async def login_form(request: web.Request) -> web.Response:
    s = site(request)
    if s.auth.password is None:
        raise web.HTTPNotFound(text="logins come from the reverse proxy here\n")
    return _page(request, "login.html", {"next": _next(request.query.get("next")), "error": ""})


async def login(request: web.Request) -> web.Response:
    s = site(request)
    if s.auth.password is None:
        raise web.HTTPNotFound(text="logins come from the reverse proxy here\n")
    form = await request.post()
    user = str(form.get("user", "")).strip()
    password = str(form.get("password", ""))
    target = _next(form.get("next"))
    address = request.remote or "?"
    wait = s.throttle.wait(address, s.clock())
    if wait > 0:
        log.warning("web login from %s refused: too many failures", address)
        error = f"Too many failed sign-ins from your address; try again in {wait:.0f} s."
        return _page(request, "login.html", {"next": target, "error": error}, 429)
    error = ""
    if not USER_RE.fullmatch(user):
        error = f"Name: {USER_HELP}."
    elif not s.auth.check_password(password):
        log.warning("failed web login as %r from %s", user, address)
        s.throttle.failed(address, s.clock())
        await asyncio.sleep(0.5)  # slows guessing; the event loop serves others meanwhile
        error = "Wrong password. Use the site's web password (web.password in kpc.yaml)."
    if error:
        return _page(request, "login.html", {"next": target, "error": error}, 401)
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        SESSION_COOKIE,
        s.auth.new_session(user, s.clock()),
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        max_age=int(s.auth.session_seconds),
        path="/",
    )
    log.info("web login: %s from %s", user, request.remote)
    raise response


async def logout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def favicon(request: web.Request) -> web.Response:
    return web.Response(status=204)


# --- pages -----------------------------------------------------------------------------------


async def rack_page(request: web.Request) -> web.Response:
    s = site(request)
    now = s.clock()
    text = request.query.get("q", "")
    state = request.query.get("state", "")
    by = request.query.get("group", "state")
    by = by if by in GROUPINGS else "state"
    stuck_only = state == "stuck"
    rows = list(s.rack.rows.values())
    hidden = {
        r.mac
        for r in rows
        if not matches(r, text, "" if stuck_only else state)
        or (stuck_only and not r.stuck(s.rack.stuck_after, now))
    }
    response = _page(
        request,
        "rack.html",
        {
            "groups": grouped(rows, by),
            "hidden": hidden,
            "shown": len(rows) - len(hidden),
            "stuck_limits": s.rack.stuck_after,
            "counts": counts(s.rack.rows.values(), s.rack.stuck_after, now),
            "states": STATES,
            "groupings": GROUPINGS,
            "q": text,
            "state": state,
            "group": by,
            "now": now,
            "cursor": s.rack.cursor,
            "stuck_after": json.dumps(s.rack.stuck_after),
        },
    )
    response.enable_compression()
    return response


def _bmc_record(store: MachineStore, address: str | None) -> Bmc | None:
    if not address:
        return None
    return next((b for b in store.list_bmcs() if b.address == address), None)


async def machine_page(request: web.Request) -> web.Response:
    s = site(request)
    mac = _mac(request)
    machine = s.store.get(mac)
    if machine is None:
        return _page(request, "error.html", {"message": f"no machine {mac}", "hint": ""}, 404)
    events = s.store.events(mac, 200)
    r = s.rack.rows.get(mac)
    console_path = logs.console_log(s.config.web.serial_logs, mac)
    console = logs.tail(console_path, 60)[0] if console_path else None
    facts = json.dumps(machine.facts, indent=2, sort_keys=True) if machine.facts else ""
    return _page(
        request,
        "machine.html",
        {
            "m": machine,
            "row": r,
            "now": s.clock(),
            "events": list(reversed(events)),
            "facts": facts,
            "bmc": _bmc_record(s.store, machine.bmc_address),
            "console": console,
            "actions": acts.ACTIONS if s.actions else {},
            "stuck": bool(r and r.stuck(s.rack.stuck_after, s.clock())),
        },
    )


async def console_api(request: web.Request) -> web.Response:
    s = site(request)
    path = logs.console_log(s.config.web.serial_logs, _mac(request))
    lines = logs.tail(path, 60)[0] if path else []
    return web.json_response({"lines": lines})


async def machines_api(request: web.Request) -> web.Response:
    s = site(request)
    return web.Response(text=s.rack.since(0), content_type="application/json")


async def kolla_page(request: web.Request) -> web.Response:
    s = site(request)
    runs = logs.kolla_runs(s.config.paths.log_dir)
    name = request.match_info.get("name")
    chosen = logs.find_run(s.config.paths.log_dir, name) if name else (runs[0] if runs else None)
    if name and chosen is None:
        return _page(request, "error.html", {"message": f"no kolla run {name}", "hint": ""}, 404)
    view = logs.view_run(chosen) if chosen else None
    return _page(request, "kolla.html", {"runs": runs[:50], "view": view})


async def kolla_tail_api(request: web.Request) -> web.Response:
    s = site(request)
    run = logs.find_run(s.config.paths.log_dir, request.match_info["name"])
    if run is None:
        raise web.HTTPNotFound(text="no such run\n")
    view = logs.view_run(run)
    return web.json_response(
        {
            "status": view.status,
            "task": view.task,
            "lines": list(view.tail),
            "failures": [
                {"host": f.host, "task": f.task, "message": f.message} for f in view.failures
            ],
        }
    )


# --- the live feed ---------------------------------------------------------------------------


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: every change to the rack, as JSON, with its cursor as the id."""
    s = site(request)
    last = request.headers.get("Last-Event-ID") or request.query.get("since", "0")
    cursor = int(last) if last.isdigit() else 0
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    _secure(response.headers)
    await response.prepare(request)
    queue = s.rack.subscribe()
    try:
        if cursor < s.rack.cursor:
            await _send(response, s.rack.since(cursor), s.rack.cursor)
        while True:
            try:
                message = await asyncio.wait_for(queue.get(), HEARTBEAT)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if message is None or _identify(request, s)[0] is None:
                break  # the server stops, or the session expired: the browser must log in
            await _send(response, message, s.rack.cursor)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        s.rack.unsubscribe(queue)
    return response


async def _send(response: web.StreamResponse, message: str, cursor: int) -> None:
    await response.write(f"id: {cursor}\ndata: {message}\n\n".encode())


# --- actions ---------------------------------------------------------------------------------


async def action(request: web.Request) -> web.Response:
    """POST: ask (the confirmation page), dry-run, or do (only with confirm=yes)."""
    s = site(request)
    if not s.actions:
        raise web.HTTPForbidden(text="actions are off (web.actions in kpc.yaml)\n")
    mac = _mac(request)
    form = await request.post()
    name = str(form.get("action", ""))
    mode = str(form.get("mode", "ask"))
    machine = s.store.get(mac)
    if machine is None:
        raise web.HTTPNotFound(text=f"no machine {mac}\n")
    try:
        chosen = acts.plan(name, machine, s.config, s.store)
    except KpcError as exc:
        return _page(request, "error.html", {"message": exc.message, "hint": exc.hint}, 400)
    if mode == "ask" or (mode == "do" and form.get("confirm") != "yes"):
        return _page(request, "confirm.html", {"plan": chosen, "m": machine})
    if mode not in ("do", "dry-run"):
        raise web.HTTPBadRequest(text="mode must be ask, dry-run or do\n")
    user = request[USER]
    loop = asyncio.get_running_loop()
    try:
        result = await loop.run_in_executor(
            None,
            lambda: acts.perform(
                chosen,
                who=user,
                dry_run=mode == "dry-run",
                config=s.config,
                store=s.store,
                environ=s.environ,
                clock=s.clock,
            ),
        )
    except KpcError as exc:
        return _page(request, "error.html", {"message": exc.message, "hint": exc.hint}, 502)
    log.info("web action by %s: %s (%s)", user, chosen.what, result.text)
    return _page(request, "result.html", {"plan": chosen, "result": result, "m": machine})


# --- the application -------------------------------------------------------------------------


def make_app(s: Site) -> web.Application:
    app = web.Application(middlewares=[_headers, _guard], client_max_size=64 * 1024)
    app[SITE] = s
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_static("/static/", HERE / "static")
    app.router.add_get("/", rack_page)
    app.router.add_get("/machines/{mac}", machine_page)
    app.router.add_post("/machines/{mac}/actions", action)
    app.router.add_get("/api/machines", machines_api)
    app.router.add_get("/api/machines/{mac}/console", console_api)
    app.router.add_get("/kolla", kolla_page)
    app.router.add_get("/kolla/{name}", kolla_page)
    app.router.add_get("/api/kolla/{name}", kolla_tail_api)
    app.router.add_get("/events", events)
    app.cleanup_ctx.append(_follow)
    return app


async def _follow(app: web.Application) -> AsyncIterator[None]:
    s = app[SITE]
    s.rack.load()
    task = asyncio.create_task(s.rack.follow(POLL))
    yield
    for queue in list(s.rack.subscribers):
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(None)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def run(s: Site, host: str, port: int, *, access_log: bool = True) -> None:
    """Serve until SIGINT/SIGTERM."""
    web.run_app(
        make_app(s),
        host=host,
        port=port,
        print=lambda line: log.info("%s", line),
        access_log=logging.getLogger("kpc.web.access") if access_log else None,
        handle_signals=True,
        shutdown_timeout=2.0,
    )


def auth_from_config(config: SiteConfig, environ: Mapping[str, str]) -> Auth:
    """The site's authentication: web.password (resolved now) or web.proxy_header."""
    web_config = config.web
    if web_config.password is not None and web_config.proxy_header is not None:
        raise ConfigError(
            "web: give web.password or web.proxy_header, not both",
            hint="proxy_header is for a reverse proxy that authenticates operators itself",
        )
    hours = web_config.session_hours * 3600
    if web_config.proxy_header is not None:
        return Auth(
            proxy_header=web_config.proxy_header,
            proxy_addresses=tuple(str(a) for a in web_config.proxy_addresses),
            session_seconds=hours,
        )
    if web_config.password is None:
        raise ConfigError(
            "the web view needs authentication and none is configured",
            hint="set web.password to a secret reference, e.g. "
            "{file: /etc/kpc/secrets/web-password} (chmod 600), or web.proxy_header",
        )
    password = web_config.password.resolve(environ)
    if len(password) < 12:
        raise ConfigError(
            f"web.password ({web_config.password.describe()}) is shorter than 12 characters",
            hint="use a long random secret, e.g. openssl rand -base64 24",
        )
    return Auth(password=password, session_seconds=hours)
