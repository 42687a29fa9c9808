"""Simulated BMCs (``python -m appliance.bmc.sim``) on loopback addresses 127.44.x.y.

Each ``sims.start(...)`` is one simulator process (one BMC or a farm on consecutive
addresses). The password goes through the environment, never argv; every process is
stopped and waited for at the end of the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, require_root, wait_for

PASSWORD = "Sim-pw_7f3a9c"  # distinctive, so a leak is easy to find in any output
USER = "admin"


@dataclass
class Sim:
    proc: subprocess.Popen[bytes]
    first: str
    count: int
    events_file: Path
    log_file: Path
    argv: list[str] = field(default_factory=list)

    def events(self) -> list[dict[str, Any]]:
        if not self.events_file.exists():
            return []
        return [json.loads(line) for line in self.events_file.read_text().splitlines()]

    def cmdline(self) -> str:
        return Path(f"/proc/{self.proc.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Sims:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.running: list[Sim] = []

    def start(
        self,
        first: str,
        count: int = 1,
        *extra: str,
        power: str = "on",
        password: str = PASSWORD,
        user: str = USER,
        wait: bool = True,
        netns: str | None = None,
        **flags: object,
    ) -> Sim:
        """Start a simulator; ``flags`` become options (``mute_after=3`` -> --mute-after=3)."""
        require_root()  # UDP port 623
        name = f"sim-{first}-{len(self.running)}"
        events, log = self.tmp / f"{name}.events", self.tmp / f"{name}.log"
        argv = [
            *(["ip", "netns", "exec", netns] if netns else []),
            sys.executable, "-m", "appliance.bmc.sim", "--listen", first, "--count", str(count),
            "--user", user, "--power", power, "--events", str(events), *extra,
            *[_flag(k, v) for k, v in flags.items() if v is not False],
        ]  # fmt: skip
        env = {**os.environ, "KPC_SIM_PASSWORD": password}
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=out)
        sim = Sim(proc, first, count, events, log, argv)
        self.running.append(sim)
        if wait:
            self.wait_ready()
        return sim

    def wait_ready(self) -> None:
        """Wait until every simulator started so far is listening."""

        def exited() -> list[Sim]:
            return [sim for sim in self.running if sim.proc.poll() is not None]

        def ready() -> bool:
            listening = all("serving" in sim.log_file.read_text() for sim in self.running)
            return listening or bool(exited())

        wait_for(ready, 30, "the simulators")
        for sim in exited():
            raise AssertionError(f"simulator {sim.first} exited: {sim.log_file.read_text()}")

    def stop_all(self) -> None:
        for sim in self.running:
            sim.stop()


def _flag(name: str, value: object) -> str:
    option = "--" + name.replace("_", "-")
    return option if value is True else f"{option}={value}"


@pytest.fixture
def sims(tmp_path: Path) -> Iterator[Sims]:
    farm = Sims(tmp_path)
    try:
        yield farm
    finally:
        farm.stop_all()


@pytest.fixture(scope="module")
def module_sims(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sims]:
    """Simulators shared by the tests of one module (they must not change their state)."""
    farm = Sims(tmp_path_factory.mktemp("sims"))
    try:
        yield farm
    finally:
        farm.stop_all()


def write_config(tmp_path: Path, extra: str = "") -> Path:
    """A site config whose registry lives in tmp_path; ``extra`` is appended YAML."""
    config = tmp_path / "kpc.yaml"
    config.write_text(
        f"""\
provisioning: {{interface: kpcd0, address: 198.18.44.1, subnet: 198.18.44.0/24}}
bootcfg: {{state_db: {tmp_path / "machines.db"}}}
paths: {{state_dir: {tmp_path / "state"}}}
{extra}"""
    )
    return config
