"""How long `kpc nodes check` takes on many nodes, beside OpenSSH doing the same work.

Starts N real sshd (default 50) on 127.0.7.1..N (needs root, sshd, unshare), each with its
own host key, then per fan-out:

- kpc: ``check_nodes`` (paramiko; one connection and one channel per node: TOFU host key,
  login, timed clock reading, the probe script), wall time and this process's CPU time;
- baseline: the system ``ssh`` client running the same probe on the same nodes with the
  same fan-out (one ssh process per node), wall time and the children's CPU time.

Prints a table; asserts nothing.

    .venv/bin/python benchmarks/nodes_check.py [NODES] [ROUNDS]
"""

from __future__ import annotations

import platform
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from appliance.drivers.ssh import Credentials, load_private_key  # noqa: E402
from appliance.nodes.access import SshSettings  # noqa: E402
from appliance.nodes.checks import PROBE_COMMAND, PROBE_SCRIPT, Policy  # noqa: E402
from appliance.nodes.readiness import check_nodes  # noqa: E402
from appliance.nodes.targets import Target  # noqa: E402
from tests.nodes.sshd import PORT, SshdFarm, keygen  # noqa: E402


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_kpc(targets: list[Target], key: Path, fanout: int) -> tuple[float, float, int]:
    settings = SshSettings(
        Credentials("root", (load_private_key(key),)), port=PORT, timeout=20, fanout=fanout
    )
    cpu, start = self_cpu(), time.monotonic()
    report = check_nodes(targets, settings, Policy(min_free_bytes=0))
    wall = time.monotonic() - start
    reached = sum(1 for n in report.nodes if n.reachable)
    return wall, self_cpu() - cpu, reached


def run_openssh(
    targets: list[Target], key: Path, fanout: int, known: Path
) -> tuple[float, float, int]:
    stdin = "\n" + PROBE_SCRIPT

    def one(target: Target) -> bool:
        argv = [
            "ssh", "-p", str(PORT), "-l", "root", "-i", str(key), "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known}",
            "-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=20",
            "--", str(target.address), PROBE_COMMAND,
        ]  # fmt: skip
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
        return done.returncode == 0

    cpu, start = children_cpu(), time.monotonic()
    with ThreadPoolExecutor(max_workers=fanout) as pool:
        ok = sum(pool.map(one, targets))
    return time.monotonic() - start, children_cpu() - cpu, ok


def main() -> None:
    nodes = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    with tempfile.TemporaryDirectory(prefix="kpcF-bench-") as tmp:
        root = Path(tmp)
        key = keygen(root / "client")
        farm = SshdFarm(root / "sshd")
        try:
            servers = [farm.start(f"127.0.7.{i}", [key], wait=False) for i in range(1, nodes + 1)]
            for server in servers:
                farm.wait_ready(server)
            targets = [Target(f"52:54:00:07:00:{i:02x}", s.address) for i, s in enumerate(servers)]
            print(
                f"# {time.strftime('%Y-%m-%d')} {platform.node()} python "
                f"{platform.python_version()}, {nodes} sshd on loopback, best of {rounds}"
            )
            print("| fan-out | kpc wall (s) | kpc CPU (s) | ssh wall (s) | ssh CPU (s) | reached |")
            print("|---|---|---|---|---|---|")
            for fanout in (1, 8, 32, nodes):
                kpc = min(run_kpc(targets, key, fanout) for _ in range(rounds))
                ssh = min(
                    run_openssh(targets, key, fanout, root / f"known-{fanout}-{r}")
                    for r in range(rounds)
                )
                print(
                    f"| {fanout} | {kpc[0]:.2f} | {kpc[1]:.2f} | {ssh[0]:.2f} | {ssh[1]:.2f} "
                    f"| {kpc[2]}/{ssh[2]} of {nodes} |"
                )
        finally:
            farm.close()


if __name__ == "__main__":
    main()
