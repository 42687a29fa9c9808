"""Put the lab OS into bootcfg's data directory, behind bootcfg's normal profiles.

The data directory is seeded exactly as ``kpc bootcfg init`` seeds one for a real rack
(default group -> ``install`` profile, ``os: installed`` -> ``targetnode``, kpc's Ignition
templates, the SSH keys). Only the install profile's boot section then changes: the lab
OS's kernel and initrd from ``assets/lab/`` instead of Flatcar's, unless real Flatcar
assets are present (fetched with ``kpc assets fetch``), which are then linked in and used.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from appliance.bootcfg.setup import INITRD, KERNEL, seed_data_dir
from appliance.config import SiteConfig
from appliance.keys import AuthorizedKey
from appliance.lab.nodeos import NodeOs
from appliance.lab.osbuild import LabOs
from appliance.lab.osimage import KERNEL_ARGS_COMMON
from appliance.lab.osmedia import media_path
from appliance.resources import resource_dir

ASSET_DIR = "lab"
INSTALL_PROFILE = "profiles/install.json"


def install_args(bootcfg_url: str, others: Sequence[str] = ()) -> list[str]:
    """The lab OS installer's kernel arguments; iPXE fills in ``${mac:hexhyp}``. ``others``:
    the other deploy hosts' bootcfg URLs, which the installer (and later the installed
    system) reports to when this one does not answer."""
    also = [f"kpc.bootcfg.also={','.join(others)}"] if others else []
    return [
        *KERNEL_ARGS_COMMON.split(),
        "kpc.role=install",
        "kpc.mac=${mac:hexhyp}",
        f"ignition.config.url={bootcfg_url}/ignition?mac=${{mac:hexhyp}}",
        f"kpc.image={bootcfg_url}/assets/{ASSET_DIR}/disk.img.gz",
        *also,
    ]


def lab_install_profile(bootcfg_url: str, others: Sequence[str] = ()) -> dict[str, object]:
    return {
        "id": "install",
        "name": "kpc lab OS: install to disk (stands in for Flatcar in the virtual lab)",
        "boot": {
            "kernel": f"/assets/{ASSET_DIR}/vmlinuz",
            "initrd": [f"/assets/{ASSET_DIR}/initrd.gz"],
            # a UEFI kernel's EFI stub finds its initrd by this name (bootcfg, like
            # matchbox, adds nothing to a profile's arguments)
            "args": ["initrd=initrd.gz", *install_args(bootcfg_url, others)],
        },
        "ignition_id": "install.ign.j2",
    }


def flatcar_present(assets: Path | None, version: str) -> Path | None:
    """The directory of Flatcar ``version``'s PXE kernel and initrd under ``assets``."""
    if assets is None:
        return None
    folder = assets / version
    if (folder / KERNEL).is_file() and (folder / INITRD).is_file():
        return folder
    return None


def _place(src: Path, dest: Path) -> None:
    """Hard-link ``src`` to ``dest`` when they share a file system, else copy it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    tmp.replace(dest)


def prepare_data_dir(
    config: SiteConfig,
    lab_os: LabOs,
    keys: list[AuthorizedKey],
    *,
    flatcar_assets: Path | None = None,
) -> str:
    """Seed ``config.bootcfg.data_dir`` for the lab; returns what the installer boots."""
    data_dir = config.bootcfg.data_dir
    version = config.os.version
    seed_data_dir(
        config,
        data_dir,
        version=version,
        keys=keys,
        ignition_dir=resource_dir("ignition", config.paths.source_dir),
        force=True,
    )
    for path in lab_os.files():
        _place(path, data_dir / "assets" / ASSET_DIR / path.name)
    media = media_path(lab_os)
    if media.is_file():  # the lab OS's CD, for the BMCs' virtual media
        _place(media, data_dir / "assets" / ASSET_DIR / media.name)
    flatcar = flatcar_present(flatcar_assets, version)
    if flatcar is not None:
        for name in (KERNEL, INITRD):
            _place(flatcar / name, data_dir / "assets" / "flatcar" / version / name)
        return f"Flatcar {version} (from {flatcar})"
    profile = lab_install_profile(config.bootcfg_url, config.bootcfg.peers)
    (data_dir / INSTALL_PROFILE).write_text(json.dumps(profile, indent=2) + "\n", encoding="utf-8")
    return f"the lab OS {lab_os.version}"


PYTHON_SYSEXT = "sysext/python.raw"  # the targetnode config's python_sysext_url, under assets/
FLATCAR_PYTHON = "flatcar-python.raw"  # kolla/flatcar-prepare.yml's, under assets/flatcar/V/


def prepare_node_os_data_dir(config: SiteConfig, node_os: NodeOs, keys: list[AuthorizedKey]) -> str:
    """Seed ``config.bootcfg.data_dir`` exactly as for a real rack and put the node OS where
    Flatcar's assets go (``assets/flatcar/VERSION/``, as 'kpc assets fetch' leaves them):
    the install profile, the Ignition templates and the URLs are the real rack's."""
    data_dir = config.bootcfg.data_dir
    if config.os.version != node_os.version:
        raise ValueError(f"the lab config's os.version is not the node OS's {node_os.version}")
    seed_data_dir(
        config,
        data_dir,
        version=node_os.version,
        keys=keys,
        ignition_dir=resource_dir("ignition", config.paths.source_dir),
        force=True,
    )
    release = data_dir / "assets" / "flatcar" / node_os.version
    for path in node_os.files():
        _place(path, release / path.name)
    if node_os.python_sysext.is_file():
        _place(node_os.python_sysext, release / FLATCAR_PYTHON)
        _place(node_os.python_sysext, data_dir / "assets" / PYTHON_SYSEXT)
    return f"the node OS {node_os.version} (Flatcar-shaped, from {node_os.release})"
