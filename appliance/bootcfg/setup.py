"""Use cases behind ``kpc bootcfg``: seed a data directory, assemble the service.

``seed_data_dir`` writes kpc's own profiles and groups (matchbox format) and copies its
Ignition templates; files that already exist are kept unless ``force``: an operator's
edits and extra groups are never overwritten silently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.bootcfg.service import CatalogHolder, RateLimit, Service
from appliance.config import SiteConfig
from appliance.errors import ConfigError
from appliance.inputfile import MAX_KEYS_BYTES, read_text
from appliance.install.osrelease import detect_os
from appliance.keys import AuthorizedKey, parse_authorized_keys
from appliance.outputfile import write_atomic
from appliance.render.ignition import IGNITION_VERSION, check_ignition, site_context
from appliance.state.store import MachineStore

KERNEL = "flatcar_production_pxe.vmlinuz"
INITRD = "flatcar_production_pxe_image.cpio.gz"
TEMPLATES = ("install.ign.j2", "targetnode.ign.j2")
KEYS_FILE = "authorized_keys"  # in the data dir: the keys the service's templates use


@dataclass
class SeedReport:
    written: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def seed_files(config: SiteConfig, version: str, keys: Sequence[AuthorizedKey]) -> dict[str, str]:
    """The files kpc writes into a data directory, relative path -> content. Pure."""
    base = f"/assets/flatcar/{version}"
    console = ["console=tty0", "console=ttyS0,115200n8"]

    def profile(pid: str, name: str, args: list[str], ignition_id: str) -> str:
        data: dict[str, Any] = {
            "id": pid,
            "name": name,
            "boot": {
                "kernel": f"{base}/{KERNEL}",
                "initrd": [f"{base}/{INITRD}"],
                "args": [f"initrd={INITRD}", *args, *console],
            },
            "ignition_id": ignition_id,
        }
        return json.dumps(data, indent=2) + "\n"

    # only uuid and mac: iPXE expands ${serial} raw, and a serial with spaces would split the
    # kernel command line
    config_url = (
        f"ignition.config.url={config.bootcfg_url}/ignition?uuid=${{uuid}}&mac=${{mac:hexhyp}}"
    )
    rescue_ign = {
        "ignition": {"version": IGNITION_VERSION},
        "passwd": {"users": [{"name": "core", "sshAuthorizedKeys": [k.line for k in keys]}]},
    }
    problems = check_ignition(rescue_ign)
    assert not problems, problems
    groups = {
        "groups/default-install.json": {
            "id": "default-install",
            "name": "Machines kpc has not installed yet: install Flatcar to disk",
            "profile": "install",
        },
        "groups/installed.json": {
            "id": "installed",
            "name": "Installed nodes fetching their own config",
            "profile": "targetnode",
            "selector": {"os": "installed"},
        },
    }
    files = {
        "profiles/install.json": profile(
            "install",
            f"Flatcar {version}: install to disk (kpc)",
            [config_url, "flatcar.first_boot=yes"],
            "install.ign.j2",
        ),
        "profiles/rescue.json": profile(
            "rescue",
            f"Flatcar {version} live from the network, console autologin (kpc rescue)",
            [config_url, "flatcar.first_boot=yes", "flatcar.autologin"],
            "rescue.ign",
        ),
        "profiles/targetnode.json": json.dumps(
            {
                "id": "targetnode",
                "name": "Installed node (kpc)",
                "ignition_id": "targetnode.ign.j2",
            },
            indent=2,
        )
        + "\n",
        "ignition/rescue.ign": json.dumps(rescue_ign, indent=2) + "\n",
        KEYS_FILE: "".join(f"{k.line}\n" for k in keys),
    }
    files.update({path: json.dumps(g, indent=2) + "\n" for path, g in groups.items()})
    return files


def seed_data_dir(
    config: SiteConfig,
    data_dir: Path,
    *,
    version: str,
    keys: Sequence[AuthorizedKey],
    ignition_dir: Path,
    force: bool = False,
) -> SeedReport:
    report = SeedReport()
    for sub in ("groups", "profiles", "ignition", "generic", "assets"):
        (data_dir / sub).mkdir(parents=True, exist_ok=True)
    files = seed_files(config, version, keys)
    for name in TEMPLATES:
        source = ignition_dir / name
        try:
            files[f"ignition/{name}"] = source.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read kpc's Ignition template {source}: {exc.strerror}",
                hint="set paths.source_dir to the directory holding kpc's ignition/ files",
            ) from None
    for rel, text in sorted(files.items()):
        path = data_dir / rel
        if path.exists() and not force:
            report.kept.append(path)
            continue
        write_atomic(path, text)
        report.written.append(path)
    return report


def read_data_dir_keys(data_dir: Path) -> list[AuthorizedKey]:
    path = data_dir / KEYS_FILE
    if not path.is_file():
        return []
    text = read_text(path, what="SSH keys file", limit=MAX_KEYS_BYTES, lenient=True)
    return parse_authorized_keys(text, str(path)).keys


def build_service(
    config: SiteConfig,
    store: MachineStore,
    *,
    data_dir: Path,
    keys: Sequence[AuthorizedKey],
    os_version: str | None,
    token: str | None,
    services: Sequence[Mapping[str, str]] = (),
) -> Service:
    """Load the data dir (ConfigError when it is broken) and assemble the service."""
    boot = config.bootcfg
    if boot.node_auth != "open":
        token = None  # per-machine credentials only: no shared secret in any config
    site = site_context(config, keys, os_version=os_version, bootcfg_token=token, services=services)
    return Service(
        catalogs=CatalogHolder(data_dir),
        store=store,
        site=site,
        token=token,
        max_body=boot.max_body,
        node_auth=boot.node_auth,
        max_unknown=boot.max_unknown,
        new_machines=RateLimit(boot.new_machines_per_minute),
    )


def installed_versions(data_dir: Path) -> list[str]:
    """Flatcar versions present under DATA/assets/flatcar (real directories only)."""
    root = data_dir / "assets" / "flatcar"
    if not root.is_dir():
        return []
    return sorted(
        (p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink() and p.name[0] != "."),
        key=lambda v: tuple(int(x) if x.isdigit() else 0 for x in v.split(".")),
    )


def resolve_os_version(
    config: SiteConfig, flag: str | None, data_dir: Path, host_root: Path = Path("/")
) -> str:
    """The Flatcar version to serve: --os-version, else os.version, else (for ``host``) this
    host's Flatcar version, else the one version fetched into the data dir's assets."""
    if flag:
        return flag
    if config.os.version != "host":
        return config.os.version
    detected = detect_os(host_root).version
    if detected is not None:
        return detected.value
    current = data_dir / "assets" / "flatcar" / "current"
    if current.is_symlink() and current.resolve().is_dir():
        return current.resolve().name
    versions = installed_versions(data_dir)
    if len(versions) == 1:
        return versions[0]
    raise ConfigError(
        "os.version is 'host', but this host is not Flatcar and the data directory holds "
        + (
            f"several Flatcar versions ({', '.join(versions)})" if versions else "no Flatcar assets"
        ),
        hint="pass --os-version VERSION, or set os.version in the site config",
    )
