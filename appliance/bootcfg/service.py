"""The running service's parts, shared by the endpoint modules.

``Service`` holds what a request needs: the catalog (reloaded when the data directory
changes), the machine registry, the site template variables, the write token and a clock.
No module-level state: one ``Service`` per application.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import jinja2

from appliance.bootcfg.catalog import Catalog, load_catalog, signature
from appliance.bootcfg.context import make_environment
from appliance.errors import ConfigError, RegistryUnavailable
from appliance.render.ignition import Renderer
from appliance.state.store import MachineStore

log = logging.getLogger("kpc.bootcfg")

P = ParamSpec("P")
T = TypeVar("T")
REGISTRY_DEADLINE = 3.0  # seconds a request waits for the registry before a 503


class CatalogHolder:
    """The current catalog. At most once per ``interval`` it looks for edits in the data
    directory and reloads; a reload that fails is logged and the previous catalog stays."""

    def __init__(
        self,
        data_dir: Path,
        *,
        interval: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.data_dir = data_dir
        self.interval = interval
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._signature = signature(data_dir)
        self._catalog = load_catalog(data_dir)
        self._checked = monotonic()
        self._failed_signature: object = None
        _report(self._catalog)

    def current(self) -> Catalog:
        now = self._monotonic()
        if now - self._checked < self.interval:
            return self._catalog
        with self._lock:
            self._checked = now
            sig = signature(self.data_dir)
            if sig == self._signature or sig == self._failed_signature:
                return self._catalog
            try:
                catalog = load_catalog(self.data_dir)
            except ConfigError as exc:
                self._failed_signature = sig
                log.error("reload of %s failed; still serving the previous data", self.data_dir)
                for problem in exc.problems or [exc.message]:
                    log.error("  %s", problem)
                return self._catalog
            self._catalog, self._signature = catalog, sig
            log.info(
                "reloaded %s: %d groups, %d profiles",
                self.data_dir,
                len(catalog.groups),
                len(catalog.profiles),
            )
            _report(catalog)
            return catalog


def _report(catalog: Catalog) -> None:
    """Log each broken file (out of service) and each warning, one line apiece."""
    for problem in catalog.problems:
        log.error("out of service: %s", problem)
    for warning in catalog.warnings:
        log.warning("%s", warning)


class RateLimit:
    """A token bucket: ``per_minute`` events a minute on average, bursts up to a tenth of
    that (at least 10). Thread-safe; ``monotonic`` is injectable for tests."""

    def __init__(self, per_minute: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(max(10, per_minute // 10))
        self._tokens = self.burst
        self._monotonic = monotonic
        self._last = monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self._monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True


@dataclass
class Service:
    catalogs: CatalogHolder
    store: MachineStore
    site: Mapping[str, Any] = field(default_factory=dict)
    token: str | None = None
    max_body: int = 65536
    clock: Callable[[], float] = time.time
    jinja: jinja2.Environment = field(default_factory=make_environment)
    renderer: Renderer = field(default_factory=Renderer)  # keeps compiled templates
    registry_deadline: float = REGISTRY_DEADLINE
    # how nodes authenticate their writes (config bootcfg.node_auth): "per-machine" or "open"
    node_auth: str = "per-machine"
    max_unknown: int = 512  # machines seen but never installed, at most
    new_machines: RateLimit = field(default_factory=lambda: RateLimit(600))
    _registry: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="kpc-registry"),
        repr=False,
    )

    @property
    def catalog(self) -> Catalog:
        return self.catalogs.current()

    async def registry(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` (registry work: blocking I/O) off the event loop, on the registry's one
        thread, waiting at most ``registry_deadline`` seconds. Past the deadline the caller
        gets ``RegistryUnavailable`` (a 503 with Retry-After); the loop never stalls."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._registry, functools.partial(fn, *args, **kwargs))
        try:
            return await asyncio.wait_for(future, self.registry_deadline)
        except TimeoutError:
            raise RegistryUnavailable(
                f"the machine registry did not answer within {self.registry_deadline:g} s",
                hint="it is busy or its disk is slow; the request can be retried",
            ) from None

    def close(self) -> None:
        self._registry.shutdown(wait=True, cancel_futures=True)
