"""`kpc images`: real BuildKit builds on the local engine, and the registry-free base image."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.config import parse_config
from appliance.drivers.docker import Docker
from appliance.images.base import debootstrap_argv, import_rootfs, tar_argv
from tests.conftest import require_docker, require_tool
from tests.services.conftest import BASE, IMAGE_PREFIX, SERVICE_IMAGES, TAG, kpc, site, write_config


def inspect(ref: str) -> dict[str, Any]:
    out = subprocess.run(["docker", "image", "inspect", ref], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)[0]
    return data


def in_image(ref: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "sh", ref, "-c", script],
        capture_output=True,
        text=True,
    )


def test_every_service_image_is_built_from_the_base_with_labels(
    built_images: dict[str, Any],
) -> None:
    base_layers = inspect(BASE)["RootFS"]["Layers"]
    for name in SERVICE_IMAGES:
        image = inspect(f"{IMAGE_PREFIX}/{name}:latest")
        assert image["RootFS"]["Layers"][: len(base_layers)] == base_layers, name
        labels = image["Config"]["Labels"]
        assert labels["org.opencontainers.image.version"] == __version__
        assert re.fullmatch(r"[0-9a-f]{12}(-dirty)?", labels["org.opencontainers.image.revision"])
        assert labels["kpc.image"] == name
    # one progress line per image and a summary per build
    output = built_images["output"]
    for index, name in enumerate(SERVICE_IMAGES, start=1):
        assert f"[{index}/{len(SERVICE_IMAGES)}] {name} → {IMAGE_PREFIX}/{name}:latest" in output
    assert f"built {len(SERVICE_IMAGES)} image(s)" in output


def test_the_ca_bundle_reached_pip_but_no_layer(built_images: dict[str, Any]) -> None:
    del built_images
    # pip inside the bootcfg build needed the CA secret; kpc is installed, with its deps
    version = subprocess.run(
        ["docker", "run", "--rm", f"{IMAGE_PREFIX}/bootcfg:latest", "--version"],
        capture_output=True,
        text=True,
    )
    assert version.stdout.strip() == f"kpc {__version__}", version.stderr
    for name in SERVICE_IMAGES:
        ref = f"{IMAGE_PREFIX}/{name}:latest"
        found = in_image(ref, "find / -xdev -name 'kpc-ca*' 2>/dev/null; ls /run/secrets 2>&1")
        assert "kpc-ca" not in found.stdout, f"{ref}: {found.stdout}"
        history = subprocess.run(
            ["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", ref],
            capture_output=True,
            text=True,
        ).stdout
        assert "ca-certificates.crt" not in history and "COPY ca" not in history


def test_images_have_what_the_services_need(built_images: dict[str, Any]) -> None:
    del built_images
    tftp = in_image(f"{IMAGE_PREFIX}/dnsmasq:latest", "ls /srv/tftp; dnsmasq --version | head -1")
    assert tftp.stdout.split()[:3] == ["ipxe.efi", "snponly.efi", "undionly.kpxe"]
    tools = in_image(
        f"{IMAGE_PREFIX}/ipmitools:latest", "ipmitool -V; ipmi-power --version; nmap -V"
    )
    assert tools.returncode == 0, tools.stderr
    assert "ipmitool version" in tools.stdout and "Nmap version" in tools.stdout
    registry = in_image(f"{IMAGE_PREFIX}/registry:latest", "docker-registry --version")
    assert registry.returncode == 0 and "2.8" in registry.stdout


def test_a_second_build_comes_from_the_cache(built_images: dict[str, Any]) -> None:
    result = kpc(built_images["config"], "images", "build", "dnsmasq", "registry")
    assert result.exit_code == 0, result.output
    counts = re.findall(r"\((\d+) of (\d+) steps cached", result.output)
    assert len(counts) == 2 and all(a == b for a, b in counts), result.output


def test_a_failing_build_shows_the_failing_step(tmp_path: Path) -> None:
    require_docker()
    bad = tmp_path / "containers" / f"{TAG}fail"
    bad.mkdir(parents=True)
    (bad / "Dockerfile").write_text(
        "ARG BASE\nFROM ${BASE}\nRUN echo kpcb-first-step\n"
        "RUN echo kpcb-marker-output && ls /kpcb-missing\n"
    )
    data = site(tmp_path, f"{TAG}-fail", paths={"source_dir": str(tmp_path)})
    config = write_config(tmp_path / "kpc.yaml", data)
    result = kpc(config, "images", "build", f"{TAG}fail")
    assert result.exit_code == 1
    err = result.stderr
    assert f"error: building image {TAG}fail ({IMAGE_PREFIX}/{TAG}fail:latest) failed" in err
    assert "failing step: [3/3] RUN echo kpcb-marker-output && ls /kpcb-missing" in err
    assert "  | kpcb-marker-output" in err
    assert "No such file or directory" in err
    assert "kpcb-first-step\n" not in err.replace("RUN echo kpcb-first-step", "")
    assert f"hint: fix containers/{TAG}fail/Dockerfile" in err
    assert f"kpc images build {TAG}fail" in err


def test_unknown_image_names_list_what_exists(tmp_path: Path) -> None:
    config = write_config(tmp_path / "kpc.yaml", site(tmp_path, f"{TAG}-x"))
    result = kpc(config, "images", "build", "dnsmasq", "nginx")
    assert result.exit_code == 2
    assert "error: no such image: nginx" in result.stderr
    assert "hint: kpc builds: bootcfg, dnsmasq" in result.stderr


def test_building_without_the_base_image_says_how_to_make_it(tmp_path: Path) -> None:
    require_docker()
    data = site(tmp_path, f"{TAG}-nobase", images={"base": f"{TAG}/no-such-base:1"})
    result = kpc(write_config(tmp_path / "kpc.yaml", data), "images", "build", "dnsmasq")
    assert result.exit_code == 1
    assert f"error: the base image {TAG}/no-such-base:1 is not there" in result.stderr
    assert "hint: make it first (no registry needed): kpc images base" in result.stderr


def test_base_image_already_present_is_used(built_images: dict[str, Any], tmp_path: Path) -> None:
    del built_images  # (which makes the base on a fresh machine)
    config = write_config(tmp_path / "kpc.yaml", site(tmp_path, f"{TAG}-base"))
    before = inspect(BASE)["Id"]
    result = kpc(config, "images", "base")
    assert result.exit_code == 0, result.output
    assert f"{BASE} is already there ({before[7:19]}); --force remakes it" in result.stdout
    assert inspect(BASE)["Id"] == before


def test_base_commands_use_the_site_mirror(tmp_path: Path) -> None:
    config = parse_config(
        "provisioning: {interface: eth1, address: 10.0.0.2, subnet: 10.0.0.0/24}\n"
        "images: {debian_mirror: 'http://mirror.example/debian', debian_suite: bookworm}\n",
        "t",
    )
    rootfs = tmp_path / "rootfs"
    assert debootstrap_argv(config, rootfs) == [
        "debootstrap", "--variant=minbase", "bookworm", str(rootfs), "http://mirror.example/debian"
    ]  # fmt: skip
    assert tar_argv(rootfs, tmp_path / "r.tar") == [
        "tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(tmp_path / "r.tar"),
        ".",
    ]  # fmt: skip


def test_a_root_file_system_is_imported_without_any_registry(tmp_path: Path) -> None:
    """The import half of ``kpc images base`` for real, on a tiny busybox root file system
    (the debootstrap half takes ~30-70 s here; benchmarks/bench_images.py runs it whole)."""
    require_docker()
    require_tool("busybox")
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(shutil.which("busybox") or "", rootfs / "bin" / "busybox")
    for applet in ("sh", "cat", "bash"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "kpcb-marker").write_text("imported\n")
    ref = f"{TAG}/import-test:1"
    try:
        image_id = import_rootfs(Docker(dict(os.environ)), rootfs, ref, tmp_path)
        assert inspect(ref)["Id"] == image_id
        assert inspect(ref)["Config"]["Cmd"] == ["/bin/bash"]
        run = subprocess.run(
            ["docker", "run", "--rm", ref, "cat", "/etc/kpcb-marker"],
            capture_output=True,
            text=True,
        )
        assert run.stdout == "imported\n", run.stderr
        assert not (tmp_path / "rootfs.tar").exists()
    finally:
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)


def test_a_rebuilt_image_replaces_the_old_one(tmp_path: Path) -> None:
    require_docker()
    folder = tmp_path / "containers" / f"{TAG}tiny"
    folder.mkdir(parents=True)
    data = site(tmp_path, f"{TAG}-tiny", paths={"source_dir": str(tmp_path)})
    config = write_config(tmp_path / "kpc.yaml", data)
    ref = f"{IMAGE_PREFIX}/{TAG}tiny:latest"
    ids = []
    try:
        for content in ("one", "two"):
            (folder / "Dockerfile").write_text(
                f"ARG BASE\nFROM ${{BASE}}\nRUN echo {content} > /kpcb-content\n"
            )
            result = kpc(config, "images", "build", f"{TAG}tiny")
            assert result.exit_code == 0, result.output
            ids.append(inspect(ref)["Id"])
        assert ids[0] != ids[1]
        gone = subprocess.run(["docker", "image", "inspect", ids[0]], capture_output=True)
        assert gone.returncode != 0, "the replaced image was left dangling"
    finally:
        subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)
