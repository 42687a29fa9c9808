"""sushy-tools' Redfish emulator (PyPI), an independent Redfish service for kpc's client.

``start_emulator`` runs ``sushy-emulator --fake`` over HTTPS with a self-signed certificate
made by ``openssl`` (optionally inside a network namespace), with HTTP basic auth from an
htpasswd file; the process is stopped and waited for by the caller (``Emulator.stop``).
"""

from __future__ import annotations

import hashlib
import os
import signal
import ssl
import subprocess
import sys
import uuid as uuidlib
from dataclasses import dataclass
from pathlib import Path

import bcrypt  # sushy-tools' own dependency

from tests.conftest import wait_for

USER = "admin"
PASSWORD = "Redfish-pw_51c9e2"  # distinctive, so a leak is easy to find in any output
EMULATOR = Path(sys.executable).parent / "sushy-emulator"


@dataclass
class Emulator:
    proc: subprocess.Popen[bytes]
    address: str
    port: int
    log: Path
    cert: Path
    system: str  # its system's UUID (the fake driver's system id)

    @property
    def fingerprint(self) -> str:
        der = ssl.PEM_cert_to_DER_cert(self.cert.read_text())
        return hashlib.sha256(der).hexdigest()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def make_cert(directory: Path, name: str = "bmc") -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def start_emulator(
    directory: Path,
    address: str,
    port: int,
    *,
    macs: tuple[str, ...] = ("52:54:00:aa:00:01",),
    power: str = "Off",
    netns: str | None = None,
    cert: tuple[Path, Path] | None = None,
) -> Emulator:
    directory.mkdir(parents=True, exist_ok=True)
    crt, key = cert or make_cert(directory)
    system = str(uuidlib.uuid4())
    htpasswd = directory / "htpasswd"
    htpasswd.write_text(f"{USER}:{crypt_password(PASSWORD)}\n")
    config = directory / "emulator.conf"
    nics = ", ".join(f"{{'mac': '{mac}'}}" for mac in macs)
    config.write_text(
        f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}\n"
        f"SUSHY_EMULATOR_STATE_DIR = {str(directory / 'state')!r}\n"  # its own, not shared
        "SUSHY_EMULATOR_FAKE_SYSTEMS = [{"
        f"'uuid': {system!r}, 'name': 'fake-{port}', 'power_state': {power!r}, "
        f"'nics': [{nics}]}}]\n"
    )
    log = directory / "emulator.log"
    argv = [
        *(["ip", "netns", "exec", netns] if netns else []),
        str(EMULATOR), "--fake", "--config", str(config), "-i", address, "-p", str(port),
        "--ssl-certificate", str(crt), "--ssl-key", str(key),
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, env=dict(os.environ))
    emulator = Emulator(proc, address, port, log, crt, system)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"sushy-emulator exited: {log.read_text()}")
        return "Running on" in log.read_text()

    wait_for(up, 30, "sushy-emulator")
    return emulator


def crypt_password(password: str) -> str:
    """The htpasswd form sushy-tools accepts: bcrypt only."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
