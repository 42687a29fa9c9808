"""Tables fit a standard 80-column terminal by leaving out low-value columns (and say so);
piped output and --json keep everything."""

from __future__ import annotations

import json
import time
from pathlib import Path

from typer.testing import CliRunner

from appliance.cli.main import app
from appliance.state.sqlite import SqliteStore

SITE = """\
provisioning: {interface: eth1, address: 198.18.0.2, subnet: 198.18.0.0/24}
os: {version: 3975.2.0}
bootcfg: {data_dir: DATA, state_db: DB}
"""


def registry(tmp_path: Path) -> Path:
    db = tmp_path / "machines.db"
    config = tmp_path / "kpc.yaml"
    config.write_text(SITE.replace("DATA", str(tmp_path)).replace("DB", str(db)))
    with SqliteStore(db) as store:
        for n in range(1, 4):
            mac, address = f"52:54:00:c6:12:{n:02x}", f"198.18.0.{50 + n}"
            store.record_request(mac, address=address, endpoint="/ipxe", now=time.time())
            facts = {"hostname": f"server{n}.rack1.example.com", "address": address}
            store.check_in(mac, facts, address, time.time())
    return config


def nodes_list(config: Path, *args: str, **env: str) -> tuple[str, str]:
    result = CliRunner().invoke(app, ["-c", str(config), "nodes", "list", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


def test_nodes_list_fits_80_columns_and_says_what_it_left_out(tmp_path: Path) -> None:
    out, err = nodes_list(registry(tmp_path), COLUMNS="80")
    lines = [line for line in out.splitlines() if not line.startswith("(")]
    assert len(lines) == 4  # the header and one line per machine: nothing wrapped
    assert max(map(len, lines)) <= 80, lines
    assert lines[0].split() == ["MAC", "STATE", "BOOT", "HOSTNAME", "ADDRESS"]
    assert lines[1].split() == [
        "52:54:00:c6:12:01", "ready", "install", "server1.rack1.example.com", "198.18.0.51"
    ]  # fmt: skip
    assert "(VIA, LAST SEEN left out at this width; --json has every field)" in out + err


def test_a_wide_terminal_or_a_pipe_gets_every_column(tmp_path: Path) -> None:
    config = registry(tmp_path)
    for env in ({"COLUMNS": "160"}, {}):
        out, err = nodes_list(config, **env)
        assert out.splitlines()[0].split()[-1] == "VIA", out
        assert "left out" not in out + err


def test_json_carries_every_field(tmp_path: Path) -> None:
    out, _ = nodes_list(registry(tmp_path), "--json", COLUMNS="40")
    (first, *_rest) = json.loads(out)
    assert first["last_endpoint"] == "checkin" and first["facts"]["hostname"].startswith("server1")
    assert {"mac", "state", "boot", "hostname", "address", "last_seen"} <= set(first)


def test_a_rich_table_wraps_long_cells_at_80_columns_and_never_cuts_them() -> None:
    from io import StringIO

    from rich.console import Console

    from appliance.cli.common import new_table

    long = "registry.example:5000/openstack.kolla/keystone-fernet:2026.2-debian-trixie"
    table = new_table("IMAGE", "STATUS", "SECONDS", "PUSHED AS")
    table.add_row("keystone-fernet", "built", "12", long)
    out = StringIO()
    Console(file=out, width=80, highlight=False).print(table)
    text = out.getvalue()
    assert "…" not in text, text
    assert max(map(len, text.splitlines())) <= 80, text
    header, *rows = text.splitlines()
    start = header.index("PUSHED AS")
    assert "".join(row[start:].strip() for row in rows) == long  # all of it, wrapped
