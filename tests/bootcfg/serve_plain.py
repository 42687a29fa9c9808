"""Serve bootcfg in this process (no thread), for tests that trace the process from outside.

python -m tests.bootcfg.serve_plain DATA_DIR DB PORT
"""

from __future__ import annotations

import sys
from pathlib import Path

from appliance.bootcfg.app import run
from appliance.bootcfg.service import CatalogHolder, Service
from appliance.state.sqlite import SERVICE_BUSY_TIMEOUT_MS, SqliteStore


def main() -> None:
    data, db, port = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    service = Service(
        catalogs=CatalogHolder(data), store=SqliteStore(db, busy_timeout_ms=SERVICE_BUSY_TIMEOUT_MS)
    )
    run(service, "127.0.0.1", port, access_log=False)


if __name__ == "__main__":
    main()
