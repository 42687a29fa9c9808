"""The run's work directory: private, exclusive, always removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.errors import KpcError
from appliance.install.flow import work_dir


def test_created_private_and_removed_even_on_error(tmp_path: Path) -> None:
    path = tmp_path / "run" / "install-host"
    with pytest.raises(RuntimeError), work_dir(path) as made:
        assert made == path and (path.stat().st_mode & 0o777) == 0o700
        (path / "deployhost.ign").write_text("{}")
        raise RuntimeError("boom")
    assert not path.exists()


def test_a_live_run_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "install-host"
    path.mkdir()
    (path / "pid").write_text("1\n")  # PID 1 is always alive
    with (
        pytest.raises(KpcError, match=r"another kpc install-host is running \(pid 1"),
        work_dir(path),
    ):
        pass
    assert (path / "pid").exists(), "another run's directory must not be touched"


def test_a_stale_directory_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "install-host"
    (path / "root").mkdir(parents=True)
    (path / "pid").write_text("not a pid\n")
    with work_dir(path):
        assert not (path / "root").exists()
    assert not path.exists()
