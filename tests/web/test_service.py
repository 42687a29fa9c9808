"""The ``web`` service: ``kpc up web`` runs kpc's image with the site's web settings, it
becomes healthy, asks for a login and shows the registry the host's bootcfg writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from appliance.state.sqlite import SqliteStore
from tests.conftest import wait_for
from tests.services.conftest import TAG, built_images, docker_names, free_port, kpc, site
from tests.web.server import PASSWORD, Client

__all__ = ["built_images"]  # the session fixture, shared with the service tests

MAC = "52:54:00:cc:00:19"


def test_kpc_up_runs_the_web_view(built_images: dict[str, Any], tmp_path: Path) -> None:
    secret = tmp_path / "web-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    port = free_port()
    prefix = f"{TAG}-w{os.getpid() % 1000}"
    data = site(
        tmp_path,
        prefix,
        web={"enabled": True, "port": port, "password": {"file": str(secret)}},
        paths={"log_dir": str(tmp_path / "logs"), "state_dir": str(tmp_path / "state")},
    )
    config = tmp_path / "kpc.yaml"
    config.write_text(yaml.safe_dump(data))
    with SqliteStore(tmp_path / "bootcfg" / "machines.db") as store:
        store.record_request(MAC, address="198.18.0.19", endpoint="ipxe", now=1.0)
    try:
        up = kpc(config, "up", "web")
        assert up.exit_code == 0, up.output
        assert f"{prefix}-web" in docker_names()
        url = f"http://127.0.0.1:{port}"
        c = Client(url)
        assert c.request("/").status == 303
        assert wait_for(lambda: c.login().status == 303, 10, "a login")
        page = c.request("/")
        assert page.status == 200 and f'id="m-{MAC}"' in page.text
        assert PASSWORD not in page.text
    finally:
        down = kpc(config, "down", "--yes")
        assert down.exit_code == 0, down.output
        assert f"{prefix}-web" not in docker_names()
