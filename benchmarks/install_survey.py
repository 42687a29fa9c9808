"""How long install-host takes to look at the disks (what the operator waits for at the prompt).

Times ``appliance.install.survey.survey()`` (lsblk, a blkid probe per device lsblk could not
name a filesystem for, mountinfo, swaps, loop backing files, the in-use resolution) and the
pure safety verdicts, with 0, 8 and 32 extra loop devices attached, beside a baseline of the
one ``lsblk -J -b -O`` call it starts from. Needs root; every loop device is detached after.

    sudo .venv/bin/python benchmarks/install_survey.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.install.survey import survey


def median_ms(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (it attaches loop devices)", file=sys.stderr)
        return 2

    def lsblk() -> None:
        subprocess.run(["lsblk", "-J", "-b", "-O"], capture_output=True, check=True)

    def verdicts() -> None:
        survey().verdicts(allow_removable=False)

    attached: list[str] = []
    print("| extra loop devices | lsblk only | survey + verdicts | devices judged |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="kpcE-bench-") as tmp:
        try:
            for target in (0, 8, 32):
                while len(attached) < target:
                    image = Path(tmp) / f"d{len(attached)}.img"
                    with image.open("wb") as f:
                        f.truncate(16 << 20)
                    out = subprocess.run(
                        ["losetup", "--find", "--show", str(image)],
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    attached.append(out.stdout.strip())
                base = median_ms(lsblk, args.rounds)
                full = median_ms(verdicts, args.rounds)
                judged = len(survey().devices)
                print(f"| {target} | {base:.1f} ms | {full:.1f} ms | {judged} |")
        finally:
            for device in attached:
                subprocess.run(["losetup", "--detach", device], check=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
