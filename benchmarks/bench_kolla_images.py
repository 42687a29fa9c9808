#!/usr/bin/env python3
"""Kolla image builds: ``kpc kolla images build`` beside plain ``kolla-build``, same run.

Both build the same images with the same kolla (the kolla_builder image), the same
kolla-build.conf, overrides, repos.yaml, sources and constraints (kpc's build directory for
the current inputs), on the same base:

- kpc cold: ``kpc kolla images build --no-cache --no-push`` (kolla's --nocache: every step of
  every image runs, apt and PyPI downloads included);
- plain cold: ``kolla-build --nocache`` into a throwaway namespace;
- kpc warm: ``kpc kolla images build --no-push`` again (cached by content hash);
- plain warm: ``kolla-build`` again (Docker's layer cache; kolla has no cache of its own).

Per image: kolla's own "Built at ... (took ...)" for each. Run as root with dockerd, the
kolla_builder image and kpc/base:trixie (the throwaway namespace is removed at the end):

    .venv/bin/python benchmarks/bench_kolla_images.py --config /path/kpc.yaml [NAME ...]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from appliance.config import load_config  # noqa: E402
from appliance.kolla import recipe  # noqa: E402

KPC = str(REPO / ".venv" / "bin" / "kpc")
PLAIN_NS = "kpcbench-plain-kolla"
TOOK = re.compile(r"INFO:kolla\.common\.utils\.([\w.-]+):Built at .*\(took ([\d:.]+)\)")


def seconds(took: str) -> float:
    h, m, s = took.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def per_image(text: str) -> dict[str, float]:
    return {m.group(1): seconds(m.group(2)) for m in TOOK.finditer(text)}


def kpc_build(config: str, names: list[str], *extra: str) -> tuple[float, dict[str, float], str]:
    began = time.monotonic()
    done = subprocess.run(
        [KPC, "--config", config, "--verbose", "kolla", "images", "build", "--no-push", *extra,
         *names],
        capture_output=True, text=True,
    )  # fmt: skip
    wall = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"kpc failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    match = re.search(r"build directory (\S+)\)", done.stdout)
    return wall, per_image(done.stdout), match.group(1) if match else ""


def plain_build(
    builder: str, workdir: str, names: list[str], *extra: str
) -> tuple[float, dict[str, float]]:
    conf = Path(workdir) / "recipe" / "kolla-build.conf"
    text = conf.read_text(encoding="utf-8")
    bench = Path(workdir) / "recipe" / "bench-plain.conf"
    text = re.sub(r"^namespace = .*$", f"namespace = {PLAIN_NS}", text, flags=re.MULTILINE)
    text = re.sub(r"^skip_existing = .*$", "skip_existing = false", text, flags=re.MULTILINE)
    text = re.sub(r"^cache = .*\n", "", text, flags=re.MULTILINE)
    text = re.sub(r"^logs_dir = .*$", "logs_dir = /kpc-build/bench-logs", text, flags=re.M)
    bench.write_text(text, encoding="utf-8")
    (Path(workdir) / "bench-logs").mkdir(exist_ok=True)
    argv = [
        "docker", "run", "--rm", "--network", "host",
        "-v", f"{workdir}:{recipe.MOUNT}", "-v", "/var/run/docker.sock:/var/run/docker.sock",
        "-e", f"PIP_CERT={recipe.MOUNT}/ca.pem", builder,
        "kolla-build", "--config-file", f"{recipe.RECIPE}/bench-plain.conf", *extra,
        recipe.regex(names),
    ]  # fmt: skip
    began = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True)
    wall = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"kolla-build failed:\n{done.stderr[-3000:]}")
    return wall, per_image(done.stdout + done.stderr)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("names", nargs="*", default=[])
    args = parser.parse_args()
    config = load_config(Path(args.config))
    builder = f"{config.images.prefix}/kolla_builder:latest"
    names = args.names or ["cron", "memcached", "mariadb-server", "keystone-api"]
    results: dict[str, object] = {"images": names}
    # make sure the build directory exists (inputs hashed, sources and constraints ready)
    kpc_build(args.config, names)
    kpc_cold, kpc_cold_each, workdir = kpc_build(args.config, names, "--no-cache")
    print(json.dumps({"kpc_cold": kpc_cold, "kpc_cold_each": kpc_cold_each}), flush=True)
    plain_cold, plain_cold_each = plain_build(builder, workdir, names, "--nocache")
    kpc_warm, _, _ = kpc_build(args.config, names)
    plain_warm, plain_warm_each = plain_build(builder, workdir, names)
    results.update(
        kpc_cold=kpc_cold, kpc_cold_each=kpc_cold_each,
        plain_cold=plain_cold, plain_cold_each=plain_cold_each,
        kpc_warm=kpc_warm, plain_warm=plain_warm, plain_warm_each=plain_warm_each,
    )  # fmt: skip
    listed = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", f"{PLAIN_NS}/*"],
        capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    if listed:
        subprocess.run(["docker", "rmi", *listed], capture_output=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
