#!/usr/bin/env python3
"""Image build and service start-up times: `kpc images build` and `kpc up`, beside baselines.

For each image: a cold build (``--no-cache``: every step runs, apt and PyPI downloads
included) and a warm build (everything cached), each through ``kpc images build`` and as a
baseline through a bare ``DOCKER_BUILDKIT=1 docker build`` of the same Dockerfile with the
same arguments and secret. Then ``kpc up`` from nothing to every service healthy, and again
with everything already up (the idempotent path), beside the baseline of ``docker run -d``
of the same three containers polled until their health commands pass. Optionally
(``--base``) ``kpc images base --force`` into a throwaway tag.

Run as root on a machine with dockerd and the base image (tags and containers use the
prefix ``kpcbench``; all are removed at the end):

    .venv/bin/python benchmarks/bench_images.py [--images dnsmasq registry] [--base]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from appliance.config import parse_config  # noqa: E402
from appliance.drivers.docker import Docker  # noqa: E402
from appliance.images.build import build_args, write_ca_bundle  # noqa: E402
from appliance.services.spec import service_specs  # noqa: E402
from appliance.services.units import docker_run_argv  # noqa: E402

KPC = [str(REPO / ".venv" / "bin" / "kpc")]
PREFIX = "kpcbench"
DEFAULT_IMAGES = ("dnsmasq", "registry", "bootcfg", "ipmitools")


def timed(fn: Callable[[], object]) -> float:
    began = time.monotonic()
    fn()
    return time.monotonic() - began


def run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{done.stdout}\n{done.stderr}")
    return done


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", nargs="*", default=list(DEFAULT_IMAGES))
    ap.add_argument("--base", action="store_true", help="also time kpc images base --force")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="kpcbench-"))
    data = {
        "provisioning": {"interface": "lo", "address": "127.0.0.1", "subnet": "127.0.0.0/8"},
        "bootcfg": {"listen": "127.0.0.1", "port": free_port(), "data_dir": str(scratch / "b")},
        "registry": {"address": "127.0.0.1", "port": free_port(), "storage": str(scratch / "r")},
        "os": {"version": "3815.2.5"},
        "images": {"prefix": PREFIX},
        "services": {"prefix": PREFIX, "health_timeout": 120},
    }
    config_file = scratch / "kpc.yaml"
    config_file.write_text(yaml.safe_dump(data))
    config = parse_config(config_file.read_text(), str(config_file))
    docker = Docker(dict(os.environ))
    builder = docker.builder()
    ca = write_ca_bundle(scratch / "ca.pem", Path("/etc/ssl/certs/ca-certificates.crt"), None)
    results: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "builder": builder[0],
        "load_before": os.getloadavg(),
        "images": {},
    }
    kpc = [*KPC, "-c", str(config_file)]

    def raw_build(name: str, no_cache: bool) -> None:
        argv = [*builder, "build", "--progress=plain", "-t", f"{PREFIX}raw/{name}:latest",
                "--secret", f"id=kpc-ca,src={ca}"]  # fmt: skip
        for key, value in build_args(config).items():
            argv += ["--build-arg", f"{key}={value}"]
        if no_cache:
            argv.append("--no-cache")
        context = REPO / "containers" / name
        if "kpc-dist/" in (context / "Dockerfile").read_text():
            # the baseline gets kpc's wheel from the last kpc build's context: build it once
            staged = scratch / f"ctx-{name}"
            if not staged.exists():
                shutil.copytree(context, staged)
                dist = staged / "kpc-dist"
                dist.mkdir()
                from appliance.images.build import build_wheel, requirements_of

                wheel = build_wheel(REPO, dist, dict(os.environ))
                reqs = "".join(f"{r}\n" for r in requirements_of(wheel))
                (dist / "requirements.txt").write_text(reqs)
            context = staged
        run([*argv, str(context)], env={**os.environ, "DOCKER_BUILDKIT": "1"})

    try:
        for name in args.images:
            figures = {
                "kpc cold": timed(lambda n=name: run([*kpc, "images", "build", "--no-cache", n])),
                "kpc warm": timed(lambda n=name: run([*kpc, "images", "build", n])),
                "docker cold": timed(lambda n=name: raw_build(n, True)),
                "docker warm": timed(lambda n=name: raw_build(n, False)),
            }
            results["images"][name] = figures  # type: ignore[index]
            print(name, {k: f"{v:.1f} s" for k, v in figures.items()}, flush=True)

        if {"dnsmasq", "registry", "bootcfg"} <= set(args.images):
            up = timed(lambda: run([*kpc, "up"]))
            again = timed(lambda: run([*kpc, "up"]))
            run([*kpc, "down"])
            specs = service_specs(config, config_file)

            def baseline() -> None:
                for spec in specs.values():
                    argv = docker_run_argv(spec, "docker")
                    argv[argv.index("--rm")] = "--detach"
                    argv[argv.index("--name") + 1] = spec.name + "-raw"
                    if spec.ports:
                        argv[argv.index("--publish") + 1] = (
                            f"127.0.0.1:{free_port()}:{spec.ports[0].container_port}/tcp"
                        )
                    run(argv)
                deadline = time.monotonic() + 120
                for spec in specs.values():
                    assert spec.health is not None
                    while subprocess.run(
                        ["docker", "exec", spec.name + "-raw", "sh", "-c", spec.health.command],
                        capture_output=True,
                    ).returncode:
                        if time.monotonic() > deadline:
                            raise SystemExit(f"baseline: {spec.name}-raw never became healthy")
                        time.sleep(0.1)

            raw = timed(baseline)
            for spec in specs.values():
                subprocess.run(["docker", "rm", "-f", spec.name + "-raw"], capture_output=True)
            results["up"] = {"kpc up (cold)": up, "kpc up (unchanged)": again, "docker run": raw}
            print("up", {k: f"{v:.1f} s" for k, v in results["up"].items()}, flush=True)

        if args.base:
            ref = f"{PREFIX}/base:bookworm"
            base_cfg = dict(data, images={"prefix": PREFIX, "base": ref})
            base_file = scratch / "base.yaml"
            base_file.write_text(yaml.safe_dump(base_cfg))
            seconds = timed(lambda: run([*KPC, "-c", str(base_file), "images", "base", "--force"]))
            results["base"] = {"kpc images base --force": seconds}
            print("base", f"{seconds:.1f} s", flush=True)
            subprocess.run(["docker", "rmi", "-f", ref], capture_output=True)
    finally:
        subprocess.run([*kpc, "down", "--purge", "--yes"], capture_output=True)
        for name in args.images:
            subprocess.run(
                ["docker", "rmi", "-f", f"{PREFIX}/{name}:latest", f"{PREFIX}raw/{name}:latest"],
                capture_output=True,
            )
        shutil.rmtree(scratch, ignore_errors=True)
    results["load_after"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"images-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
