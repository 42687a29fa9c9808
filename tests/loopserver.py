"""An aiohttp application on a loopback port, served from its own event loop in a thread,
for tests that talk to it over real HTTP (bootcfg's service, the web view)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web


class LoopServer:
    """``serve(app)`` starts it on 127.0.0.1 and a free port; ``shutdown()`` stops it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.port = 0

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    def serve(self, app: web.Application, **runner_options: Any) -> None:
        self.thread.start()
        self.runner = web.AppRunner(app, access_log=None, **runner_options)
        self._run(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self._run(site.start())
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def shutdown(self) -> None:
        if self.runner is not None:
            self._run(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"
