"""The running service's parts, shared by the endpoint modules.

``Service`` holds what a request needs: the catalog (reloaded when the data directory
changes), the machine registry, the site template variables, the write token and a clock.
No module-level state: one ``Service`` per application.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from appliance.bootcfg.catalog import Catalog, load_catalog, signature
from appliance.bootcfg.context import make_environment
from appliance.errors import ConfigError
from appliance.render.ignition import Renderer
from appliance.state.store import MachineStore

log = logging.getLogger("kpc.bootcfg")


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

    @property
    def catalog(self) -> Catalog:
        return self.catalogs.current()
