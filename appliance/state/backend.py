"""The site's machine registry, on the backend its config names (``state.backend``)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from appliance.config import SiteConfig
from appliance.state.store import MachineStore


def open_store(
    config: SiteConfig,
    environ: Mapping[str, str] | None = None,
    *,
    busy_timeout_ms: int | None = None,
) -> MachineStore:
    """SQLite (``bootcfg.state_db``; ``busy_timeout_ms``: how long a write waits for another
    writer's lock) by default; the etcd cluster of ``state.etcd`` when ``state.backend`` is
    ``etcd`` (its secrets resolved from ``environ``)."""
    if config.state.backend == "etcd":
        from appliance.state.etcd import open_etcd_store  # only sites on etcd load it

        assert config.state.etcd is not None
        return open_etcd_store(config.state.etcd, os.environ if environ is None else environ)
    from appliance.state.sqlite import open_store as open_sqlite

    if busy_timeout_ms is None:
        return open_sqlite(config)
    return open_sqlite(config, busy_timeout_ms=busy_timeout_ms)
