"""The bootcfg web application: routes, error handling, running it."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.typedefs import Handler

from appliance.bootcfg import boot, configs, files, machines
from appliance.bootcfg.common import SERVICE, TEXT
from appliance.bootcfg.service import Service
from appliance.errors import RegistryUnavailable, StateError

log = logging.getLogger("kpc.bootcfg")


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Registry errors become a 503 and a log line; nothing leaks a traceback to a client."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except RegistryUnavailable as exc:
        log.warning("%s: machine registry unavailable: %s", request.path, exc.message)
        return web.Response(
            text=f"unavailable: {exc.message}; retry later\n",
            status=503,
            content_type=TEXT,
            headers={"Retry-After": str(exc.retry_after)},
        )
    except StateError as exc:
        log.error("%s: machine registry: %s", request.path, exc.message)
        return web.Response(text=f"error: {exc.message}\n", status=503, content_type=TEXT)


class _OneLine(logging.Filter):
    """aiohttp logs a malformed request with a traceback; make it one line naming the
    client and the parser's complaint (control characters escaped)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, BadHttpMessage):
            reason = " ".join(str(exc).split())[:200]
            said = record.getMessage()
            record.msg = "%s: malformed HTTP request refused (400): %s"
            record.args = (ascii(said), ascii(reason))
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_malformed_requests() -> None:
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _OneLine) for f in logger.filters):
        logger.addFilter(_OneLine())


def make_app(service: Service) -> web.Application:
    _quiet_malformed_requests()
    app = web.Application(middlewares=[_errors], client_max_size=service.max_body)
    app[SERVICE] = service

    async def close_registry(app: web.Application) -> None:
        service.close()

    app.on_cleanup.append(close_registry)
    app.router.add_get("/", boot.home)
    app.router.add_get("/grub", boot.grub)
    app.router.add_get("/boot.ipxe", boot.bootstrap)
    app.router.add_get("/boot.ipxe.0", boot.bootstrap)
    app.router.add_get("/ipxe", boot.ipxe)
    app.router.add_get("/ignition", configs.ignition)
    app.router.add_get("/metadata", configs.metadata)
    app.router.add_get("/generic", configs.generic)
    app.router.add_get("/assets/{tail:.*}", files.asset)
    app.router.add_get("/healthz", machines.healthz)
    app.router.add_post("/install-complete", machines.install_complete)
    app.router.add_post("/checkin", machines.checkin)
    return app


def run(service: Service, host: str, port: int, *, access_log: bool = True) -> None:
    """Serve until SIGINT/SIGTERM."""
    web.run_app(
        make_app(service),
        host=host,
        port=port,
        print=lambda line: log.info("%s", line),
        access_log=logging.getLogger("kpc.bootcfg.access") if access_log else None,
        handle_signals=True,
    )
