"""The node OS's disk layout and GRUB pieces (pure), and the GPT sfdisk makes from them."""

from __future__ import annotations

import itertools
import json
import struct
import subprocess
from pathlib import Path

import pytest

from appliance.lab import nodeimage
from appliance.lab.nodeos import flatcar_install_script
from tests.conftest import REPO, require_tool


def test_layout_follows_flatcar_partition_numbers_and_labels() -> None:
    parts = nodeimage.layout(300 * nodeimage.MIB + 1)
    assert [(p.number, p.label) for p in parts] == [
        (1, "EFI-SYSTEM"),
        (2, "BIOS-BOOT"),
        (6, "OEM"),
        (9, "ROOT"),
    ]
    for before, after in itertools.pairwise(parts):
        assert before.end == after.start  # no gaps, no overlaps
    assert parts[-1].size == 301 * nodeimage.MIB_SECTORS  # rounded up to whole MiB
    assert nodeimage.image_bytes(parts) == (parts[-1].end + 2048) * 512


def test_sfdisk_makes_that_gpt(tmp_path: Path) -> None:
    require_tool("sfdisk")
    parts = nodeimage.layout(8 * nodeimage.MIB)
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(nodeimage.image_bytes(parts))
    subprocess.run(
        ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", image.name],
        input=nodeimage.sfdisk_script(image.name, parts),
        text=True,
        cwd=tmp_path,
        check=True,
    )
    table = json.loads(
        subprocess.run(
            ["sfdisk", "--json", str(image)], capture_output=True, text=True, check=True
        ).stdout
    )["partitiontable"]
    assert table["label"] == "gpt"
    got = {
        (p["node"][-1], p["start"], p["size"], p["type"], p["name"]) for p in table["partitions"]
    }
    want = {(str(p.number), p.start, p.size, p.type_guid, p.label) for p in parts}
    assert got == want


def test_boot_sector_and_core_image_are_patched_like_grub_setup() -> None:
    boot = bytes(range(256)) * 2
    code = nodeimage.patch_boot_sector(boot, 133120)
    assert len(code) == 440
    assert struct.unpack_from("<Q", code, 0x5C)[0] == 133120
    assert code[0x64] == 0xFF and code[0x66:0x68] == b"\x90\x90"
    assert code[:0x5C] == boot[:0x5C]
    core = b"\xaa" * 1000
    patched = nodeimage.patch_core_image(core, 133120, 2048)
    assert len(patched) == 1024
    assert struct.unpack_from("<QHH", patched, 500) == (133121, 1, 0x820)
    assert struct.unpack_from("<QHH", patched, 488) == (0, 0, 0)
    with pytest.raises(ValueError, match="BIOS boot partition holds 1"):
        nodeimage.patch_core_image(core, 133120, 1)
    with pytest.raises(ValueError, match="not 512"):
        nodeimage.patch_boot_sector(b"x", 1)


def test_grub_config_turns_the_flag_into_flatcar_first_boot() -> None:
    cfg = nodeimage.grub_config("9999.0.5")
    assert "if [ -f ($root)/flatcar/first_boot ]" in cfg
    assert 'set first_boot="flatcar.first_boot=detected"' in cfg
    assert "root=LABEL=ROOT rw" in cfg and "$first_boot" in cfg
    assert "--label EFI-SYSTEM" in nodeimage.grub_early_config()


def test_version_and_version_txt() -> None:
    version = nodeimage.version_for("00000ff0abcdef12")
    assert version == "9999.0.255"
    text = nodeimage.version_txt(version, "00000ff0abcdef12")
    assert "FLATCAR_VERSION=9999.0.255\n" in text and "FLATCAR_BUILD=9999\n" in text


def test_flatcar_install_carries_the_key_where_kpc_assets_fetch_finds_it(tmp_path: Path) -> None:
    from appliance.bootcfg.fetch import key_from_flatcar_install

    template = (REPO / "appliance/lab/nodeos/flatcar-install").read_text()
    key = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nabc\n-----END PGP PUBLIC KEY BLOCK-----\n"
    script = tmp_path / "flatcar-install"
    script.write_text(flatcar_install_script(template, key))
    found = key_from_flatcar_install(script, tmp_path / "key.asc")
    assert found is not None and found.read_text() == key
    usage = subprocess.run(["bash", str(script), "-h"], capture_output=True, text=True)
    assert usage.returncode == 0
    for flag in ("-d DEVICE", "-i FILE", "-C CHANNEL", "-V VERSION", "-b BASEURL", "-f IMAGE"):
        assert flag in usage.stdout
    refused = subprocess.run(
        ["bash", str(script), "-d", str(tmp_path / "nodisk")], capture_output=True, text=True
    )
    assert refused.returncode == 1 and "is not a block device" in refused.stderr
