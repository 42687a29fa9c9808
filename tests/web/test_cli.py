"""`kpc web` itself: it refuses to serve without authentication and serves with it."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from typer.testing import CliRunner

from appliance.cli.main import app
from tests.conftest import REPO, wait_for
from tests.services.conftest import free_port
from tests.web.server import PASSWORD, write_config


def test_no_login_configured_is_an_error_before_anything_is_served(tmp_path: Path) -> None:
    config = write_config(tmp_path, password=None)
    result = CliRunner().invoke(app, ["-c", str(config), "web", "--port", str(free_port())])
    assert result.exit_code != 0
    assert "needs authentication" in result.output and "web.password" in result.output


def test_kpc_web_serves_only_after_a_login(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, port=port)
    log = (tmp_path / "web.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "appliance", "-c", str(config), "web", "--listen", "127.0.0.1"],
        cwd=REPO,
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                return resp.status == 200

        wait_for(healthy, 30, "kpc web to answer", alive=[proc])
        try:
            urllib.request.urlopen(f"{url}/api/machines", timeout=5)
            raise AssertionError("the API answered without a login")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        assert PASSWORD not in (tmp_path / "web.log").read_text()
        assert PASSWORD not in Path(f"/proc/{proc.pid}/cmdline").read_text()
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
