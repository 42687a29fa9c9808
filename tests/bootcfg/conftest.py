"""Fixtures for bootcfg tests: a data directory in matchbox's layout and a live server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.bootcfg.server import Server

MAC = "52:54:00:12:34:56"
INSTALL_IGN = """{
  "ignition": {"version": "3.3.0"},
  "storage": {"files": [{"path": "/etc/kpc-mac",
    "contents": {"source": {{ ("data:," ~ mac) | json }}}}]},
  "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": {{ ssh_keys | json }}}]}
}
"""
TARGET_IGN = """{
  "ignition": {"version": "3.3.0"},
  "storage": {"files": [{"path": "/etc/role",
    "contents": {"source": {{ ("data:," ~ role ~ "-" ~ request.query.os) | json }}}}]}
}
"""
PLAIN_IGN = {"ignition": {"version": "3.3.0"}, "systemd": {"units": []}}


class DataDir:
    """Write matchbox-shaped files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("groups", "profiles", "ignition", "generic", "assets"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    def group(
        self,
        gid: str,
        profile: str,
        selector: dict[str, str] | None = None,
        metadata: dict[str, Any] | None = None,
        file: str | None = None,
    ) -> Path:
        data: dict[str, Any] = {"id": gid, "name": gid, "profile": profile}
        if selector:
            data["selector"] = selector
        if metadata:
            data["metadata"] = metadata
        path = self.root / "groups" / (file or f"{gid}.json")
        path.write_text(json.dumps(data))
        return path

    def profile(
        self,
        pid: str,
        *,
        kernel: str | None = "/assets/k/vmlinuz",
        initrd: list[str] | None = None,
        args: list[str] | None = None,
        ignition_id: str | None = None,
        generic_id: str | None = None,
    ) -> Path:
        data: dict[str, Any] = {"id": pid, "name": pid}
        if kernel is not None:
            data["boot"] = {
                "kernel": kernel,
                "initrd": initrd if initrd is not None else ["/assets/k/initrd.cpio.gz"],
                "args": args or [],
            }
        if ignition_id:
            data["ignition_id"] = ignition_id
        if generic_id:
            data["generic_id"] = generic_id
        path = self.root / "profiles" / f"{pid}.json"
        path.write_text(json.dumps(data))
        return path

    def file(self, sub: str, name: str, text: str) -> Path:
        path = self.root / sub / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


def kpc_layout(data: DataDir) -> DataDir:
    """The shape 'kpc bootcfg init' writes: default install group, os=installed group."""
    data.profile(
        "install",
        kernel="/assets/flatcar/1.2.3/flatcar_production_pxe.vmlinuz",
        initrd=["/assets/flatcar/1.2.3/flatcar_production_pxe_image.cpio.gz"],
        args=["flatcar.config.url=http://x/ignition?mac=${mac:hexhyp}", "flatcar.first_boot=yes"],
        ignition_id="install.ign.j2",
    )
    data.profile("targetnode", kernel=None, ignition_id="targetnode.ign.j2")
    data.profile("rescue", args=["flatcar.autologin"], ignition_id="plain.ign")
    data.group("default-install", "install")
    data.group("installed", "targetnode", {"os": "installed"}, {"role": "compute"})
    data.file("ignition", "install.ign.j2", INSTALL_IGN)
    data.file("ignition", "targetnode.ign.j2", TARGET_IGN)
    data.file("ignition", "plain.ign", json.dumps(PLAIN_IGN))
    return data


@pytest.fixture
def data(tmp_path: Path) -> DataDir:
    return DataDir(tmp_path / "data")


@pytest.fixture
def kpc_data(data: DataDir) -> DataDir:
    return kpc_layout(data)


SITE = {
    "ssh_keys": [
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl test"
    ]
}


@pytest.fixture
def server(kpc_data: DataDir, tmp_path: Path) -> Iterator[Server]:
    srv = Server(kpc_data.root, tmp_path / "machines.db", site=SITE).start()
    try:
        yield srv
    finally:
        srv.stop()
