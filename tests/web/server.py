"""The web view on a loopback port, in a thread, with a site config made for the test."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import yaml

from appliance.config import load_config
from appliance.state.sqlite import SqliteStore
from appliance.web.app import Site, auth_from_config, make_app
from tests.loopserver import LoopServer

PASSWORD = "correct-horse-battery-staple"


def write_config(tmp: Path, secret_text: str = PASSWORD, **web_settings: Any) -> Path:
    """A site config whose registry, logs and web password live under ``tmp``
    (a setting given as None is left out)."""
    secret = tmp / "web-password"
    secret.write_text(secret_text + "\n")
    secret.chmod(0o600)
    settings: dict[str, Any] = {"password": {"file": str(secret)}, **web_settings}
    data = {
        "provisioning": {"interface": "lo", "address": "127.0.0.1", "subnet": "127.0.0.0/8"},
        "bootcfg": {"data_dir": str(tmp / "bootcfg"), "state_db": str(tmp / "machines.db")},
        "paths": {"state_dir": str(tmp / "state"), "log_dir": str(tmp / "logs")},
        "bmc": {"password": {"env": "KPC_TEST_BMC_PASSWORD"}},
        "web": {k: v for k, v in settings.items() if v is not None},
    }
    path = tmp / "kpc.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class Reply:
    status: int
    text: str
    headers: Mapping[str, str]
    url: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class WebServer(LoopServer):
    """``start()`` / ``stop()``; ``url`` is http://127.0.0.1:PORT."""

    def __init__(
        self, config_path: Path, environ: Mapping[str, str] | None = None, **site: Any
    ) -> None:
        self.config = load_config(config_path)
        self.store = SqliteStore(self.config.bootcfg.state_db or Path("unused"))
        env = dict(environ or {})
        self.site = Site(
            self.config,
            self.store,
            auth_from_config(self.config, env),
            env,
            actions=site.pop("actions", self.config.web.actions),
            **site,
        )
        super().__init__()

    def start(self) -> WebServer:
        self.serve(make_app(self.site), shutdown_timeout=1.0)
        return self

    def stop(self) -> None:
        self.shutdown()
        self.store.close()


class Client:
    """A cookie-keeping HTTP client that does not follow redirects."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect()
        )

    def request(
        self,
        path: str,
        form: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        body = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers=dict(headers or {}))
        try:
            with self.opener.open(req, timeout=10) as resp:
                return Reply(resp.status, resp.read().decode(), dict(resp.headers), resp.url)
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.read().decode(), dict(exc.headers), self.base + path)

    def login(self, user: str = "alice", password: str = PASSWORD) -> Reply:
        return self.request("/login", {"user": user, "password": password, "next": "/"})

    def csrf(self, path: str = "/") -> str:
        page = self.request(path).text
        marker = 'name="csrf" value="'
        start = page.index(marker) + len(marker)
        return page[start : page.index('"', start)]
