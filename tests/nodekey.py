"""A machine's SSH host key pair, made and used with ssh-keygen: what a node signs its
check-ins with (``bootcfg.node_auth: per-machine``), for the tests that play nodes."""

from __future__ import annotations

import subprocess
from pathlib import Path


class Node:
    """A machine's SSH host key pair, made and used with ssh-keygen."""

    def __init__(self, directory: Path, name: str) -> None:
        self.key = directory / f"{name}_ed25519"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(self.key)],
            check=True,
        )
        self.public = self.key.with_suffix(".pub").read_text().strip()

    def sign(self, message: bytes, namespace: str = "kpc-checkin") -> str:
        done = subprocess.run(
            ["ssh-keygen", "-Y", "sign", "-q", "-f", str(self.key), "-n", namespace],
            input=message,
            capture_output=True,
            check=True,
        )
        return "".join(done.stdout.decode().strip().splitlines()[1:-1])
