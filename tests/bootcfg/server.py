"""A real bootcfg service on a loopback port, in a thread, for tests."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance.bootcfg.app import make_app
from appliance.bootcfg.service import CatalogHolder, Service
from appliance.state.sqlite import SERVICE_BUSY_TIMEOUT_MS, SqliteStore


@dataclass
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str]

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


class Server:
    """Start with ``start()``, stop with ``stop()``; ``url`` is http://127.0.0.1:PORT."""

    def __init__(
        self,
        data_dir: Path,
        db: Path,
        *,
        site: Mapping[str, Any] | None = None,
        token: str | None = None,
        max_body: int = 65536,
        clock: Any = None,
        node_auth: str = "open",
        **service_options: Any,
    ) -> None:
        self.store = SqliteStore(db, busy_timeout_ms=SERVICE_BUSY_TIMEOUT_MS)
        kwargs: dict[str, Any] = {"node_auth": node_auth, **service_options}
        if clock is not None:
            kwargs["clock"] = clock
        self.service = Service(
            catalogs=CatalogHolder(data_dir, interval=0.0),
            store=self.store,
            site=dict(site or {}),
            token=token,
            max_body=max_body,
            **kwargs,
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.port = 0

    def start(self) -> Server:
        self.thread.start()
        self.runner = web.AppRunner(make_app(self.service), access_log=None)
        asyncio.run_coroutine_threadsafe(self.runner.setup(), self.loop).result(10)
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        asyncio.run_coroutine_threadsafe(site.start(), self.loop).result(10)
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.store.close()

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        req = urllib.request.Request(
            self.url + path, data=body, method=method, headers=dict(headers or {})
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return Reply(resp.status, resp.read(), dict(resp.headers))
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.read(), dict(exc.headers))

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request(path, **kw)

    def post(self, path: str, data: Any = None, raw: bytes | None = None, **kw: Any) -> Reply:
        body = raw if raw is not None else (b"" if data is None else json.dumps(data).encode())
        headers = {"Content-Type": "application/json", **kw.pop("headers", {})}
        return self.request(path, method="POST", body=body, headers=headers, **kw)
