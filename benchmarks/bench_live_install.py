"""A deploy host from a live Flatcar-shaped server: how long, and what the operator carries.

Time: runs the full live install of ``tests/install/test_live_flatcar.py`` (the lab's live
host, ``kpc lab up --live-host``, QEMU TCG: log in over SSH, scp kpc's executable, the
refusals, ``sudo -E ./kpc install-host`` typed at a pty, the node OS's flatcar-install, a
reboot into the disk with the deployhost Ignition) and reports each phase. Its baseline, from
the same run: the same server's boot from ``kpc lab up`` to answering SSH (its live CD), i.e.
what one boot costs on this machine. Set KPC_TEST_LAB_SLOT as for the tests.

Size: the executable (as the test used it), and the image bundle of ``kpc images save`` (kpc's
service images; with ``--kolla`` also the Kolla set, if built), beside the baseline of the
same images' sizes as the engine reports them (unpacked) and the bundle gzip'ed (what a
compressing copy would carry).

    .venv/bin/python benchmarks/bench_live_install.py [--sizes-only] [--kolla] [-c kpc.yaml]

Needs root, QEMU, Docker and kpc's images built (``kpc images build``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from appliance.images.bundle import read_manifest

REPO = Path(__file__).resolve().parent.parent
KPC = [sys.executable, "-m", "appliance"]
BENCH = "kpcbench"  # the prefix the measured images are tagged under for the run


def mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


def gzip_size(path: Path) -> int:
    """The size of ``path`` after gzip -6 (streamed, nothing written)."""
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    total = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            total += len(z.compress(chunk))
    return total + len(z.flush())


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def borrow(prefix: str, kolla_prefix: str | None) -> list[str]:
    """Tag the images built under ``prefix`` (and ``kolla_prefix``'s kolla_deployer and Kolla
    set) as BENCH's; returns the new tags (removed afterwards: the images stay)."""
    made = []
    repos = docker("images", "--format", "{{.Repository}}:{{.Tag}}").split()
    for ref in repos:
        repo, _, tag = ref.partition(":")
        if repo.startswith(f"{prefix}/") and repo != f"{prefix}/kolla_builder":
            new = f"{BENCH}/{repo.split('/', 1)[1]}:{tag}"
        elif kolla_prefix and repo == f"{kolla_prefix}/kolla_deployer":
            new = f"{BENCH}/kolla_deployer:{tag}"
        elif kolla_prefix and repo.startswith(f"{kolla_prefix}-kolla-"):
            new = f"{BENCH}{repo[len(kolla_prefix) :]}:{tag}"
        else:
            continue
        docker("tag", ref, new)
        made.append(new)
    return made


def sizes(prefix: str, kolla_prefix: str | None) -> None:
    borrowed = borrow(prefix, kolla_prefix)
    names = sorted(
        {r.split("/", 1)[1].split(":")[0] for r in borrowed if r.startswith(BENCH + "/")}
    )
    try:
        with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
            config = Path(tmp) / "kpc.yaml"
            config.write_text(
                "provisioning: {interface: lo, address: 127.0.0.1, subnet: 127.0.0.0/8}\n"
                f"images: {{prefix: {BENCH}}}\nkolla: {{services: minimal}}\n",
                encoding="utf-8",
            )
            bundle = Path(tmp) / "kpc-images.tar"
            kolla = ["--kolla"] if kolla_prefix else []
            argv = [*KPC, "-c", str(config), "images", "save", str(bundle), *names, *kolla]
            started = time.monotonic()
            done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False)
            seconds = time.monotonic() - started
            if done.returncode != 0:
                print(done.stdout + done.stderr, file=sys.stderr)
                raise SystemExit(1)
            refs = [image.ref for image in read_manifest(bundle).images]
            ids = {docker("image", "inspect", "--format", "{{.Id}}", r).strip() for r in refs}
            unpacked = sum(int(docker("image", "inspect", "--format", "{{.Size}}", i)) for i in ids)
            size = bundle.stat().st_size
            started = time.monotonic()
            loaded = subprocess.run(
                [*KPC, "-c", str(config), "images", "load", "--check", str(bundle)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            check_s = time.monotonic() - started
            assert loaded.returncode == 0, loaded.stdout + loaded.stderr
            print(f"bundle: {len(refs)} image(s) ({', '.join(names)}"
                  f"{' + Kolla minimal' if kolla else ''}): {mb(size)}, saved in {seconds:.0f} s, "
                  f"checked (kpc images load --check) in {check_s:.0f} s")  # fmt: skip
            print(f"  baseline: the same images, each counted whole by the engine: {mb(unpacked)}")
            print(f"  baseline: the bundle gzip -6: {mb(gzip_size(bundle))}")
    finally:
        for ref in borrowed:
            docker("image", "rm", "--no-prune", ref)


def live_install() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "timings.json"
        env = {**os.environ, "KPC_LIVE_INSTALL_TIMINGS": str(out)}
        argv = [
            sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "--full",
            "tests/install/test_live_flatcar.py", "-k", "installs_itself",
        ]  # fmt: skip
        started = time.monotonic()
        done = subprocess.run(argv, cwd=REPO, env=env, check=False)
        if done.returncode != 0 or not out.exists():
            raise SystemExit(f"the live install test failed (exit {done.returncode})")
        t = json.loads(out.read_text())
    print(f"live install, whole test: {time.monotonic() - started:.0f} s")
    whole = t["login_to_deploy_host_ssh_s"]
    print(f"  login on the live server -> deploy host answers SSH: {whole:.0f} s")
    print(f"    scp of the executable + 3 dry runs: {t['copy_and_dry_runs_s']:.0f} s")
    print(f"    kpc install-host (typed answers, flatcar-install): {t['install_host_s']:.0f} s")
    print(f"    reboot into the disk (Ignition) to SSH: {t['disk_boot_to_ssh_s']:.0f} s")
    print(f"  baseline: live boot, kpc lab up to SSH: {t['live_boot_to_ssh_s']:.0f} s")
    print(f"  executable: {mb(t['executable_bytes'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-only", action="store_true", help="skip the live install")
    parser.add_argument(
        "--prefix", default="kpcb", help="images.prefix kpc's images were built under"
    )
    parser.add_argument(
        "--kolla-prefix", help="images.prefix of a kpc kolla images build (minimal)"
    )
    args = parser.parse_args()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.uname().nodename}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    )
    sizes(args.prefix, args.kolla_prefix)
    if not args.sizes_only:
        live_install()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
