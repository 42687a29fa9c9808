"""`kpc images save` / `kpc images load` against the real engine and kpc's real registry.

The bundle is made from kpc's built images (retagged under a prefix of this test's own) and
a stand-in Kolla set (one tiny imported image under every name of the 'minimal' set), then
loaded back after the tags are gone: first with the registry down (loaded, clear error),
then again once ``kpc up registry`` runs from the image the bundle itself brought.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from appliance.config import parse_config
from appliance.kolla.mirror import default_images, image_tag
from tests.conftest import require_docker
from tests.services.conftest import IMAGE_PREFIX, kpc, site, write_config

PREFIX = "kpcbdl"  # every image and container name this test makes
SERVICES = ("registry", "dnsmasq")


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["docker", *args], capture_output=True, text=True)
    assert out.returncode == 0 or not check, out.stderr
    return out


def image_id(ref: str) -> str | None:
    out = docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return out.stdout.strip() if out.returncode == 0 else None


def our_tags() -> list[str]:
    out = docker("images", "--format", "{{.Repository}}:{{.Tag}}")
    return [t for t in out.stdout.split() if t.startswith(PREFIX)]


def untag_ours() -> None:
    for tag in our_tags():
        docker("image", "rm", "--no-prune", tag, check=False)


def stand_in_kolla(root: Path, data: dict[str, Any]) -> dict[str, str]:
    """One tiny image, tagged as each Kolla image of the minimal set: name -> local ref."""
    config = parse_config(yaml.safe_dump(data))
    rootfs = root / "rootfs"
    rootfs.mkdir()
    (rootfs / "kolla-stand-in").write_text("not a real kolla image\n")
    tarball = root / "rootfs.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(rootfs / "kolla-stand-in", arcname="kolla-stand-in")
    first = None
    refs = {}
    for name in default_images(config):
        ref = f"{PREFIX}-kolla-0123456789ab/{name}:{image_tag(config)}"
        if first is None:
            docker("import", str(tarball), ref)
            first = ref
        else:
            docker("tag", first, ref)
        refs[name] = ref
    return refs


def test_a_bundle_carries_the_images_and_the_kolla_set_to_the_registry(
    built_images: dict[str, Any], tmp_path: Path
) -> None:
    del built_images
    require_docker()
    untag_ours()
    data = site(tmp_path, PREFIX, images_prefix=PREFIX, kolla={"services": "minimal"})
    config = write_config(tmp_path / "kpc.yaml", data)
    expected = {}
    for name in SERVICES:
        docker("tag", f"{IMAGE_PREFIX}/{name}:latest", f"{PREFIX}/{name}:latest")
        expected[f"{PREFIX}/{name}:latest"] = image_id(f"{PREFIX}/{name}:latest")
    kolla = stand_in_kolla(tmp_path, data)
    expected.update({ref: image_id(ref) for ref in kolla.values()})
    bundle = tmp_path / "out" / "kpc-images.tar"
    bundle.parent.mkdir()
    try:
        # what is not built is named, with the command that builds it; nothing is written
        missing = kpc(config, "images", "save", str(bundle), "bootcfg")
        assert missing.exit_code == 1
        assert f"not built here: {PREFIX}/bootcfg:latest" in missing.output
        assert "kpc images build bootcfg" in missing.output
        assert not bundle.exists()

        made = kpc(config, "images", "save", str(bundle), *SERVICES, "--kolla")
        assert made.exit_code == 0, made.output
        assert sorted(p.name for p in bundle.parent.iterdir()) == [
            "kpc-images.tar",
            "kpc-images.tar.sha256",
        ]
        # coreutils alone can check the copy (Flatcar has no Python)
        check = subprocess.run(
            ["sha256sum", "-c", "kpc-images.tar.sha256"], cwd=bundle.parent, capture_output=True
        )
        assert check.returncode == 0, check.stdout
        with tarfile.open(bundle) as tar:
            assert tar.getnames() == ["kpc-images.json", "images.tar"]
            manifest = json.load(tar.extractfile("kpc-images.json"))  # type: ignore[arg-type]
        assert {i["ref"]: i["id"] for i in manifest["images"]} == expected
        assert {i["kolla"] for i in manifest["images"] if i["kolla"]} == set(kolla)
        intact = kpc(config, "images", "load", "--check", str(bundle))
        assert intact.exit_code == 0 and "intact, 11 image(s)" in intact.output, intact.output
        # compressed, the Kolla set alone: docker load reads the gzip'ed archive itself
        gzipped = tmp_path / "kolla.tar"
        made = kpc(config, "images", "save", str(gzipped), "--kolla-only", "--gzip")
        assert made.exit_code == 0, made.output
        with tarfile.open(gzipped) as tar:
            assert tar.getnames() == ["kpc-images.json", "images.tar.gz"]
        assert kpc(config, "images", "load", "--check", str(gzipped)).exit_code == 0
        again = kpc(config, "images", "save", str(bundle), *SERVICES)
        assert again.exit_code == 2 and "already exists" in again.output

        # a damaged copy is refused whole: nothing reaches the engine
        damaged = tmp_path / "damaged.tar"
        raw = bytearray(bundle.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        damaged.write_bytes(bytes(raw))
        untag_ours()
        refused = kpc(config, "images", "load", str(damaged))
        assert refused.exit_code == 1
        assert "images.tar is damaged" in refused.output
        assert "nothing was loaded" in refused.output
        assert "sha256sum -c" in refused.output
        assert our_tags() == []
        # a plain docker save archive is not taken for a bundle
        plain = tmp_path / "plain.tar"
        docker("save", "-o", str(plain), f"{IMAGE_PREFIX}/registry:latest")
        wrong = kpc(config, "images", "load", str(plain))
        assert wrong.exit_code == 1 and "not a kpc image bundle" in wrong.output
        assert "docker load -i" in wrong.output

        # the registry is not running yet: the images load, the push is refused plainly
        first = kpc(config, "images", "load", str(bundle))
        assert first.exit_code == 1
        registry = f"127.0.0.1:{data['registry']['port']}"
        assert f"the images are loaded, but the registry at {registry} does not answer" in (
            first.output
        )
        assert "kpc up registry" in first.output
        assert {ref: image_id(ref) for ref in expected} == expected

        up = kpc(config, "up", "registry")
        assert up.exit_code == 0, up.output
        second = kpc(config, "images", "load", str(bundle))
        assert second.exit_code == 0, second.output
        assert f"pushed {len(kolla)} Kolla image(s)" in second.output
        for ref in kolla.values():
            docker("image", "rm", "--no-prune", ref)
        from_gzip = kpc(config, "images", "load", "--no-push", str(gzipped))
        assert from_gzip.exit_code == 0, from_gzip.output
        assert {ref: image_id(ref) for ref in kolla.values()} == {
            ref: expected[ref] for ref in kolla.values()
        }
        tag = image_tag(parse_config(yaml.safe_dump(data)))
        for name in kolla:
            url = f"http://{registry}/v2/openstack.kolla/{name}/tags/list"
            with urllib.request.urlopen(url, timeout=10) as answer:
                assert json.load(answer)["tags"] == [tag], name
    finally:
        kpc(config, "down", "--purge", "--yes")
        untag_ours()
