"""A real bootcfg service on a loopback port, in a thread, for tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.bootcfg.app import make_app
from appliance.bootcfg.service import CatalogHolder, Service
from appliance.state.sqlite import SERVICE_BUSY_TIMEOUT_MS, SqliteStore
from tests.loopserver import LoopServer


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


class Server(LoopServer):
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
        super().__init__()

    def start(self) -> Server:
        self.serve(make_app(self.service))
        return self

    def stop(self) -> None:
        self.shutdown()
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
