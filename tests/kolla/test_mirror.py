"""`kpc registry mirror` between two real registries (Debian's docker-registry on loopback).

The "upstream" holds two small images named like kolla's, pushed by the real Docker engine;
the copy is checked by pulling it back with Docker.
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.kolla.mirror import plan_image
from appliance.kolla.registry_client import Registry
from tests.conftest import require_docker
from tests.kolla.conftest import (
    LocalRegistry,
    docker,
    kpc,
    make_registry,
    write_config,
)

NAMESPACE = "kpch.kolla"
TAG = "2026.2-debian-trixie"
IMAGES = ("cron", "kolla-toolbox")

pytestmark = pytest.mark.docker


@dataclass
class Mirror:
    config: Path
    upstream: LocalRegistry
    target: LocalRegistry
    image_ids: dict[str, str]


def _push_small_image(root: Path, upstream: LocalRegistry, name: str) -> str:
    """A ~300 KB image made with docker import, pushed upstream; returns its image ID."""
    content = root / name
    content.mkdir()
    (content / "name").write_text(f"kpch {name}\n", encoding="utf-8")
    (content / "payload").write_bytes(os.urandom(300_000))  # incompressible: ~0.3 MiB pushed
    archive = root / f"{name}.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(content, arcname=".")
    ref = f"{upstream.address}/{NAMESPACE}/{name}:{TAG}"
    image_id = docker("import", str(archive), ref).stdout.strip()
    try:
        docker("push", "-q", ref)
    finally:
        docker("rmi", ref, check=False)
    return image_id


@pytest.fixture
def mirror_lab(tmp_path: Path, registries: list[LocalRegistry]) -> Iterator[Mirror]:
    require_docker()
    upstream = make_registry(registries, tmp_path / "upstream")
    target = make_registry(registries, tmp_path / "target")
    ids = {name: _push_small_image(tmp_path, upstream, name) for name in IMAGES}
    config = write_config(
        tmp_path / "kpc.yaml",
        {
            "provisioning": {"interface": "lo", "address": "127.0.0.1", "subnet": "127.0.0.0/8"},
            "registry": {"address": "127.0.0.1", "port": target.port},
            "kolla": {"upstream_registry": upstream.address, "upstream_namespace": NAMESPACE},
        },
    )
    yield Mirror(config, upstream, target, ids)


def _rows(output: str) -> dict[str, str]:
    rows = {}
    for line in output.splitlines():
        match = re.match(rf"{re.escape(NAMESPACE)}/(\S+?):\S*\s+(.*)$", line)
        if match:
            rows[match.group(1)] = re.sub(r"\s+", " ", match.group(2)).strip()
    return rows


def test_mirror_plans_resumes_copies_and_skips(mirror_lab: Mirror) -> None:
    target = Registry(mirror_lab.target.address)
    names = ",".join(IMAGES)

    dry = kpc(mirror_lab.config, "registry", "mirror", "--images", names, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert _rows(dry.stdout) == {
        "cron": "0/2 present 0.3 MiB would copy",
        "kolla-toolbox": "0/2 present 0.3 MiB would copy",
    }
    assert target.repositories() == []

    # an earlier run stopped after cron's first blob: that blob is not copied again
    source = Registry(mirror_lab.upstream.address)
    plan = plan_image(source, target, NAMESPACE, "cron", TAG)
    first = plan.missing[0]
    source.copy_blob_to(target, plan.repo, first.digest, first.size, plan.repo, lambda n: None)

    result = kpc(mirror_lab.config, "registry", "mirror", "-i", "cron", "-i", "kolla-toolbox")
    assert result.exit_code == 0, result.output
    rows = _rows(result.stdout)
    assert rows["cron"].startswith("1/2 present") and rows["cron"].endswith("copied")
    assert rows["kolla-toolbox"] == "0/2 present 0.3 MiB copied"
    assert "mirroring 2 image(s), tag 2026.2-debian-trixie" in result.stderr

    # Docker pulls the copies from the target and gets the very same images
    for name, image_id in mirror_lab.image_ids.items():
        ref = f"{mirror_lab.target.address}/{NAMESPACE}/{name}:{TAG}"
        try:
            docker("pull", "-q", ref)
            pulled = json.loads(docker("image", "inspect", ref).stdout)[0]["Id"]
        finally:
            docker("rmi", ref, check=False)
        assert pulled == image_id

    again = kpc(mirror_lab.config, "registry", "mirror", "--images", names)
    assert again.exit_code == 0, again.output
    assert _rows(again.stdout) == {
        "cron": "2/2 present 0.0 MiB already there",
        "kolla-toolbox": "2/2 present 0.0 MiB already there",
    }
    assert f"copied 0.0 MiB into http://{mirror_lab.target.address}" in again.stdout

    listed = kpc(mirror_lab.config, "registry", "list")
    assert listed.exit_code == 0, listed.output
    assert re.search(rf"{NAMESPACE}/cron\s+{TAG}", listed.stdout)
    assert re.search(rf"{NAMESPACE}/kolla-toolbox\s+{TAG}", listed.stdout)


def test_a_missing_image_is_named_before_anything_is_copied(mirror_lab: Mirror) -> None:
    result = kpc(mirror_lab.config, "registry", "mirror", "--images", "cron,nova-api")
    assert result.exit_code == 1
    assert (
        f"error: image {NAMESPACE}/nova-api:{TAG} is not in registry "
        f"{mirror_lab.upstream.address}" in result.stderr
    )
    assert "hint: check the image name (--images)" in result.stderr
    assert Registry(mirror_lab.target.address).repositories() == []


def test_an_unreachable_target_registry(mirror_lab: Mirror) -> None:
    mirror_lab.target.stop()
    result = kpc(mirror_lab.config, "registry", "mirror", "--images", "cron")
    assert result.exit_code == 1
    assert f"registry http://{mirror_lab.target.address} cannot be reached" in result.stderr
    assert "connection refused" in result.stderr.lower()
