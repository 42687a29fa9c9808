"""kpc builds Kolla images with the real kolla-build (kolla 23.0.0) and pushes them into a real
Docker registry, offline: Debian's mirror and PyPI only.

The images are cached by their inputs' hash in the engine (namespace ``kpch-kolla-<hash>``)
and the sdists and constraints under a fixed cache folder, so a warm run (CI's second run on
a machine) builds nothing. The first test builds cron and memcached (and their parent,
base): the smallest complete kolla-build.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_docker
from tests.kolla.conftest import NODE_BASE, TAG, LocalRegistry, docker, kpc, make_registry
from tests.kolla.conftest import write_config as write_yaml

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CACHE = Path("/var/tmp/kpch-kolla-build")  # kept between runs: the build cache by hash
RELEASE_TAG = "2026.2-debian-trixie"
MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
    )
)


@pytest.fixture(scope="module")
def builder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """kpc's kolla_builder image, built the product's way."""
    require_docker()
    if docker("image", "inspect", NODE_BASE, check=False).returncode != 0:
        pytest.fail(f"{NODE_BASE} is missing: run 'kpc images base --suite trixie' first")
    root = tmp_path_factory.mktemp("kolla-builder")
    config = write_yaml(
        root / "kpc.yaml",
        {
            "provisioning": {"interface": "lo", "address": "127.0.0.1", "subnet": "127.0.0.0/8"},
            "images": {"prefix": TAG},
        },
    )
    result = kpc(config, "images", "build", "kolla_builder")
    assert result.exit_code == 0, result.output
    return f"{TAG}/kolla_builder:latest"


def site(root: Path, registry: LocalRegistry, **images: Any) -> Path:
    return write_yaml(
        root / "kpc.yaml",
        {
            "provisioning": {"interface": "lo", "address": "127.0.0.1", "subnet": "127.0.0.0/8"},
            "registry": {"address": "127.0.0.1", "port": registry.port},
            "images": {"prefix": TAG, **images},
            "services": {"prefix": TAG},
            "kolla": {"services": "minimal", "build_threads": 2},
            "paths": {"state_dir": str(CACHE), "log_dir": str(root / "log")},
        },
    )


def manifest(registry: LocalRegistry, name: str) -> dict[str, Any]:
    url = f"http://{registry.address}/v2/openstack.kolla/{name}/manifests/{RELEASE_TAG}"
    request = urllib.request.Request(url, headers={"Accept": MANIFEST_TYPES})
    with urllib.request.urlopen(request, timeout=10) as reply:
        data: dict[str, Any] = json.loads(reply.read())
    return data


def test_build_pushes_what_kolla_ansible_pulls_and_a_second_run_builds_nothing(
    builder: str, registries: list[LocalRegistry], tmp_path: Path
) -> None:
    registry = make_registry(registries, tmp_path / "registry")
    config = site(tmp_path, registry)
    first = kpc(config, "kolla", "images", "build", "cron", "memcached")
    assert first.exit_code == 0, first.output
    out = first.stdout
    assert "kolla 23.0.0, OpenStack 2026.2: cron, memcached" in out
    assert re.search(r"^cron\s+(built|cached)\s+", out, re.MULTILINE), out
    where = f"127.0.0.1:{registry.port}/openstack.kolla"
    assert f"{where}/memcached:{RELEASE_TAG}" in out
    for name in ("cron", "memcached"):
        assert manifest(registry, name)["layers"], name  # the nodes can pull it
    match = re.search(r"inputs (\w{12}); logs under (\S+)\)", out)
    assert match, out
    # kolla's own log per image, for what this run built
    built = re.findall(r"^(\S+)\s+built\s+\d+\s", out, re.MULTILINE)
    logs = sorted(Path(match.group(2)).glob("*/*.log"))
    assert {p.stem for p in logs} >= set(built)

    again = kpc(config, "kolla", "images", "build", "cron", "memcached")
    assert again.exit_code == 0, again.output
    assert "every image is already built from these inputs: nothing to build" in again.stdout
    assert re.search(r"^memcached\s+cached\s+-\s+", again.stdout, re.MULTILINE), again.stdout
    assert "building" not in again.stdout


def test_an_unknown_or_unbuildable_image_is_named(
    builder: str, registries: list[LocalRegistry], tmp_path: Path
) -> None:
    registry = make_registry(registries, tmp_path / "registry")
    config = site(tmp_path, registry)
    result = kpc(config, "kolla", "images", "build", "--no-push", "cron", "no-such-image")
    assert result.exit_code == 1, result.output
    assert "1 Kolla image(s) failed to build:" in result.stderr
    assert "no-such-image: kolla has no image of that name" in result.stderr
    refused = kpc(config, "kolla", "images", "build", "fluentd")
    assert refused.exit_code == 2
    assert "kpc cannot build fluentd: needs fluent-package from the CNCF apt" in refused.stderr


def test_a_broken_mirror_fails_naming_the_image_and_the_step(
    builder: str, registries: list[LocalRegistry], tmp_path: Path
) -> None:
    registry = make_registry(registries, tmp_path / "registry")
    # nothing listens on port 9 of this host: apt fails at once
    config = site(tmp_path, registry, debian_mirror="http://127.0.0.1:9/debian")
    result = kpc(config, "kolla", "images", "build", "cron")
    assert result.exit_code == 1, result.output
    err = " ".join(result.stderr.split())
    assert "1 Kolla image(s) failed to build:" in err
    assert re.search(
        r"cron: not built: a parent image failed \(base failed at step .RUN apt update", err
    ), err
    assert re.search(r"base: building", result.stdout), result.stdout
    logs = sorted(CACHE.glob("kolla-build/*/logs/*/base.log"))
    assert logs and "127.0.0.1:9" in max(logs, key=lambda p: p.stat().st_mtime).read_text()
