"""The kpc executable an operator brings to a live Flatcar: its size and what it costs to start.

Builds (or takes from the cache) the executable with ``scripts/build-binary`` and reports its
size and its compressed size (what a slow link or a USB stick carries), then the median wall
time of ``kpc --version`` and of ``kpc install-host --dry-run`` (the whole survey and render,
no disk written) run from the executable, beside the baseline of the same commands from
kpc's development venv (Python already installed, nothing to unpack).

    .venv/bin/python benchmarks/bench_binary.py [--rounds 5] [--device /dev/loopN]

``--device`` names a disk for the dry run (default: none, so the dry run stops at the disk
choice with no disk named, which still times everything before it).
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLATCAR_TREE = REPO / "tests" / "install" / "fixtures" / "os" / "flatcar-beta"


def median_s(argv: list[str], rounds: int, env: dict[str, str]) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(argv, capture_output=True, env=env, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="/dev/null")
    args = parser.parse_args()

    start = time.perf_counter()
    built = subprocess.run(
        [str(REPO / "scripts" / "build-binary")], capture_output=True, text=True, check=True
    )
    build_s = time.perf_counter() - start
    binary = Path(built.stdout.strip().splitlines()[-1])
    size = binary.stat().st_size
    gz = len(gzip.compress(binary.read_bytes(), compresslevel=6))
    print(f"executable {binary}: {size / 1e6:.1f} MB ({gz / 1e6:.1f} MB gzipped)")
    print(f"build (or cache hit) took {build_s:.1f} s")

    venv_kpc = REPO / ".venv" / "bin" / "kpc"
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        (home / ".ssh").mkdir()
        key = home / "id"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (home / ".ssh" / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
        config = home / "kpc.yaml"
        config.write_text(
            "provisioning: {interface: eth0, address: 198.18.0.1, subnet: 198.18.0.0/24}\n"
        )
        env = {**os.environ, "HOME": str(home), "SSH_CONNECTION": "", "SUDO_USER": ""}
        dry = [
            "--config", str(config), "install-host", "--dry-run", "--device", args.device,
            "--os-root", str(FLATCAR_TREE), "--work-dir", str(home / "work"),
        ]  # fmt: skip
        rows = [
            ("kpc --version", ["--version"]),
            ("kpc install-host --dry-run", dry),
        ]
        print(f"| command | executable | baseline: venv | rounds {args.rounds} |")
        print("|---|---|---|---|")
        for name, tail in rows:
            frozen = median_s([str(binary), *tail], args.rounds, env)
            venv = median_s([str(venv_kpc), *tail], args.rounds, env)
            print(f"| {name} | {frozen:.2f} s | {venv:.2f} s | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
