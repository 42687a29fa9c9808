#!/usr/bin/env python3
"""Registry mirror: `kpc registry mirror` beside the Docker engine doing the same copy.

Two Debian docker-registry instances on loopback: "upstream" holds one image of several
random (incompressible) layers, named like a Kolla image; "target" starts empty. Measured,
each from an empty target:

- kpc: `kpc registry mirror --images <name>` (registry to registry over the HTTP API v2);
- baseline: `docker pull` from upstream, `docker tag`, `docker push` to the target (what the
  original did by hand), starting with no local copy of the image;
- kpc again on the full target (every blob present: what a resumed or repeated mirror costs).

Usage: .venv/bin/python benchmarks/bench_registry_mirror.py [--layers 3] [--layer-mib 64]
Everything runs on 127.0.0.1; registries, images and files are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KPC = REPO / ".venv" / "bin" / "kpc"
NAMESPACE = "kpch.kolla"
NAME = "bench-image"
TAG = "2024.1-debian-bookworm"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(*argv: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, check=True, capture_output=True, env=env)


def start_registry(root: Path, port: int) -> subprocess.Popen[bytes]:
    root.mkdir(parents=True)
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(root / "config.yml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"docker-registry on port {port} did not start")


def timed(fn: object) -> float:
    began = time.monotonic()
    fn()  # type: ignore[operator]
    return time.monotonic() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--layer-mib", type=int, default=64)
    args = parser.parse_args()
    size_mib = args.layers * args.layer_mib
    work = Path(tempfile.mkdtemp(prefix="kpch-bench-mirror-"))
    procs: list[subprocess.Popen[bytes]] = []
    up_port, down_port, base_port = free_port(), free_port(), free_port()
    source_ref = f"127.0.0.1:{up_port}/{NAMESPACE}/{NAME}:{TAG}"
    refs = [source_ref]
    try:
        procs.append(start_registry(work / "up", up_port))
        context = work / "context"
        context.mkdir()
        lines = ["FROM scratch"]
        for index in range(args.layers):
            (context / f"layer{index}").write_bytes(os.urandom(args.layer_mib << 20))
            lines.append(f"COPY layer{index} /layer{index}")
        (context / "Dockerfile").write_text("\n".join(lines) + "\n", encoding="utf-8")
        run("docker", "build", "-q", "-t", source_ref, str(context))
        run("docker", "push", source_ref)
        run("docker", "rmi", source_ref)
        shutil.rmtree(context)

        config = work / "kpc.yaml"
        config.write_text(
            "provisioning: {interface: lo, address: 127.0.0.1, subnet: 127.0.0.0/8}\n"
            f"registry: {{address: 127.0.0.1, port: {down_port}}}\n"
            f"kolla: {{upstream_registry: '127.0.0.1:{up_port}', "
            f"upstream_namespace: {NAMESPACE}}}\n",
            encoding="utf-8",
        )
        procs.append(start_registry(work / "down", down_port))
        mirror = [str(KPC), "-c", str(config), "registry", "mirror", "--images", NAME]
        kpc_cold = timed(lambda: run(*mirror))
        kpc_warm = timed(lambda: run(*mirror))

        procs.append(start_registry(work / "baseline", base_port))
        target_ref = f"127.0.0.1:{base_port}/{NAMESPACE}/{NAME}:{TAG}"
        refs.append(target_ref)

        def engine_copy() -> None:
            run("docker", "pull", source_ref)
            run("docker", "tag", source_ref, target_ref)
            run("docker", "push", target_ref)

        engine = timed(engine_copy)
    finally:
        for ref in refs:
            subprocess.run(["docker", "rmi", ref], capture_output=True)
        for proc in procs:
            proc.terminate()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)

    print(f"image: {args.layers} layers x {args.layer_mib} MiB = {size_mib} MiB (random data)")
    print(f"{'method':44} {'seconds':>8} {'MiB/s':>8}")
    for label, seconds in (
        ("kpc registry mirror (empty target)", kpc_cold),
        ("baseline: docker pull + tag + push", engine),
        ("kpc registry mirror (everything present)", kpc_warm),
    ):
        print(f"{label:44} {seconds:8.2f} {size_mib / seconds:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
