#!/usr/bin/env python3
"""Kolla deploy, per phase: ``kpc kolla genconfig … post-deploy`` and a token, on lab nodes.

Against a site config whose nodes are ready (a lab after ``kpc lab wait``, or one whose nodes
checked in) and whose registry holds the release's images (``kpc kolla images build``):

1. each phase once, as the operator runs them (``--skip-checks``: kpc's own node fitness gate
   is timed separately, as ``nodes check``): genconfig, bootstrap, prechecks, deploy,
   post-deploy, ``openstack token issue``; the first deploy pulls every image and starts
   every container;
2. warm: ``kpc kolla deploy`` again (nothing to change), beside the baseline measured in the
   same run: plain ``kolla-ansible deploy`` in the same deployer container with the very
   same configuration, mounts and key (the ``docker run`` that ``kpc kolla deploy --dry-run``
   prints), so the difference is what kpc adds around kolla-ansible.

    .venv/bin/python benchmarks/bench_kolla_deploy.py --config /var/lib/kpc/lab-2/kpc.yaml
    .venv/bin/python benchmarks/bench_kolla_deploy.py --config … --warm-only  # already deployed

Prints one JSON object (seconds per phase) for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KPC = str(REPO / ".venv" / "bin" / "kpc")
PHASES: list[tuple[str, list[str]]] = [
    ("nodes check", ["nodes", "check", "--optional=clock"]),
    ("genconfig", ["kolla", "genconfig"]),
    ("bootstrap", ["kolla", "bootstrap", "--skip-checks"]),
    ("prechecks", ["kolla", "prechecks", "--skip-checks"]),
    ("deploy", ["kolla", "deploy", "--skip-checks"]),
    ("post-deploy", ["kolla", "post-deploy"]),
    ("token issue", ["kolla", "openstack", "--", "token", "issue", "-f", "value", "-c", "id"]),
]


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    began = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    took = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(
            f"{shlex.join(argv)} failed ({done.returncode}):\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return took


def kpc(config: str, args: list[str]) -> float:
    return timed([KPC, "--config", config, *args])


def plain_deploy(config: str) -> float:
    """kolla-ansible deploy in the deployer container, without kpc around it."""
    shown = subprocess.run(
        [KPC, "--config", config, "kolla", "deploy", "--dry-run", "--skip-checks"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next(x for x in shown.stdout.splitlines() if x.startswith("docker run "))
    argv = shlex.split(line)
    with tempfile.TemporaryDirectory(prefix="kpcbench-kolla-") as scratch:
        os.chmod(scratch, 0o700)
        # kpc makes a private run directory per run; the plain run gets a fresh one too
        at = next(i for i, a in enumerate(argv) if "kolla-run-XXXX" in a)
        argv[at] = scratch + ":" + argv[at].split(":", 1)[1]
        name = argv.index("--name") + 1
        argv[name] = f"{argv[name]}-plain"
        return timed(argv)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--warm-only", action="store_true", help="skip the first deploy")
    args = parser.parse_args()
    result: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.node()} {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
    }
    first: dict[str, float] = {}
    if not args.warm_only:
        for name, argv in PHASES:
            first[name] = round(kpc(args.config, argv), 1)
            print(f"{name}: {first[name]} s", file=sys.stderr)
        result["first"] = first
        result["first_total"] = round(sum(first.values()), 1)
    result["warm_kpc_deploy"] = round(kpc(args.config, ["kolla", "deploy", "--skip-checks"]), 1)
    result["warm_plain_kolla_ansible_deploy"] = round(plain_deploy(args.config), 1)
    result["load_after"] = round(os.getloadavg()[0], 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
