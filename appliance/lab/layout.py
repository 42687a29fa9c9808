"""Where the lab keeps its files, all under one directory (``kpc lab up --dir``). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.lab.plan import Server

DEFAULT_DIR = Path("/var/lib/kpc/lab")
DEFAULT_CACHE = Path("/var/cache/kpc/lab-os")


@dataclass(frozen=True)
class ServerPaths:
    directory: Path

    @property
    def spec(self) -> Path:
        return self.directory / "vm.json"

    @property
    def disk(self) -> Path:
        return self.directory / "disk.qcow2"

    @property
    def serial_log(self) -> Path:
        return self.directory / "serial.log"

    @property
    def qemu_log(self) -> Path:
        return self.directory / "qemu.log"

    @property
    def bmc_log(self) -> Path:
        return self.directory / "bmc.log"

    @property
    def qmp_socket(self) -> Path:
        return self.directory / "qmp.sock"

    @property
    def ovmf_vars(self) -> Path:
        return self.directory / "OVMF_VARS.fd"


@dataclass(frozen=True)
class LabPaths:
    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "kpc.yaml"

    def host_config(self, host: int) -> Path:
        """Deploy host ``host``'s site config (the first's is ``kpc.yaml``)."""
        return self.config if host == 1 else self.directory / f"kpc-{host}.yaml"

    @property
    def etcd(self) -> Path:
        """The lab's etcd members' data directories (with two deploy hosts)."""
        return self.directory / "etcd"

    @property
    def bmc_password(self) -> Path:
        return self.directory / "bmc-password"

    @property
    def ssh_key(self) -> Path:
        return self.directory / "ssh" / "id_ed25519"

    @property
    def sercon(self) -> Path:
        return self.directory / "sercon.bin"

    @property
    def logs(self) -> Path:
        return self.directory / "logs"

    @property
    def supervisor_log(self) -> Path:
        return self.logs / "supervisor.log"

    @property
    def router_log(self) -> Path:
        return self.logs / "router.log"

    @property
    def router_leases(self) -> Path:
        return self.directory / "router.leases"

    @property
    def ntp_pid(self) -> Path:
        return self.directory / "ntp.pid"

    @property
    def supervisor(self) -> Path:
        """The supervisor's own record: its pid and its children's."""
        return self.directory / "supervisor.json"

    @property
    def bootcfg(self) -> Path:
        return self.directory / "bootcfg"

    @property
    def servers(self) -> Path:
        return self.directory / "servers"

    def server(self, server: Server) -> ServerPaths:
        return ServerPaths(self.servers / server.name)

    @property
    def kolla(self) -> Path:
        """The lab's Kolla configuration (globals, inventory, passwords, openrc), which
        ``kpc kolla genconfig`` and ``post-deploy`` write: the lab's, so lab down removes it."""
        return self.directory / "kolla"

    def owned(self) -> list[Path]:
        """Everything ``kpc lab up`` may create in the directory (``kpc lab down`` removes
        exactly these, then the directory if it is empty)."""
        names = [
            "kpc.yaml",
            "bmc-password",
            "ssh",
            "sercon.bin",
            "logs",
            "router.leases",
            "ntp.pid",
            "supervisor.json",
            "bootcfg",
            "servers",
            "state",
            "registry",
            "kpc-2.yaml",
            "host2",
            "etcd",
            "kolla",
        ]
        return [self.directory / name for name in names]
