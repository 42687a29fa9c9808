"""Plumbing for the virtual-lab tests: running kpc's commands, finding leftovers, keeping
the servers' serial logs and the services' logs when a test fails.

The test labs use the name ``kpcg``, lab network 10 (198.18.20.0/23) and the container
prefix ``kpcg``, so they never collide with a lab someone made with the defaults. Set
``KPC_TEST_LAB_SLOT`` (1-9) to run a second test session beside the first on one machine: its
labs take the name ``kpcg<slot>``, network ``10 + slot`` and ports ``8088/5088 + slot``.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from typer.testing import CliRunner

from appliance.cli.main import app
from appliance.lab.up import OVMF_CODE, OVMF_VARS
from appliance.lab.vmspec import VmSpec, spec_to_json
from tests.conftest import REPO, require_root, require_tool

SLOT = int(os.environ.get("KPC_TEST_LAB_SLOT", "0") or "0")
NAME = f"kpcg{SLOT}" if SLOT else "kpcg"
NETWORK = 10 + SLOT
PREFIX = NAME
SITE_NET = f"198.18.{2 * NETWORK}."
BMC_NET = f"198.18.{2 * NETWORK + 1}."
BOOTCFG_PORT = 8088 + SLOT
REGISTRY_PORT = 5088 + SLOT
ARTIFACTS = REPO / "lab-run" / "artifacts"
PR_SET_CHILD_SUBREAPER = 36


@dataclass
class Result:
    code: int
    output: str


def kpc(
    args: Sequence[str], config: Path | None = None, env: dict[str, str] | None = None
) -> Result:
    """Run one kpc command in this process, as the operator would type it."""
    environ = {"KPC_CONFIG": str(config)} if config else {}
    environ.update(env or {})
    result = CliRunner().invoke(app, list(args), env=environ, catch_exceptions=False)
    output = result.output
    print(f"$ kpc {' '.join(args)}\n{output}")
    return Result(result.exit_code, output)


def ok(args: Sequence[str], config: Path) -> str:
    """Run one kpc command with ``config``; its output, or fail with it."""
    result = kpc(args, config)
    assert result.code == 0, f"kpc {' '.join(args)} failed:\n{result.output}"
    return result.output


def nodes_by_mac(config: Path) -> dict[str, dict[str, object]]:
    """``kpc nodes list --json`` with ``config``, by MAC."""
    listed = json.loads(ok(["nodes", "list", "--json"], config))
    rows = listed["machines"] if isinstance(listed, dict) else listed
    return {str(m["mac"]): m for m in rows}


def up_args(
    directory: Path, nodes: int, firmware: str, bmc: str = "ipmi", os_kind: str = "busybox"
) -> list[str]:
    """``kpc lab up`` for a test lab; the busybox OS unless the test proves the node OS."""
    return [
        *("lab", "up", "--nodes", str(nodes), "--firmware", firmware, "--dir", str(directory)),
        *("--bmc", bmc, "--os", os_kind),
        *("--name", NAME, "--network", str(NETWORK), "--services-prefix", PREFIX),
        *("--bootcfg-port", str(BOOTCFG_PORT), "--registry-port", str(REGISTRY_PORT)),
    ]


def has_image(ref: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", ref], capture_output=True).returncode == 0


def build_kolla_deployer(config: Path, *also: str) -> None:
    """kpc's kolla_deployer (and ``also``) with the lab's config, as an operator builds them:
    the Debian bases first if missing (bookworm for the node wheels, trixie for kolla).
    Layers are shared with every other build of the same Dockerfile (tests/kolla's
    kolla_deployer among them), so after the first build this costs seconds."""
    if not has_image("kpc/base:bookworm"):
        ok(["images", "base"], config)
    if not has_image("kpc/base:trixie"):
        ok(["images", "base", "--suite", "trixie"], config)
    ok(["images", "build", "kolla_deployer", *also], config)


def require_lab_tools() -> None:
    require_root()
    require_tool("qemu-system-x86_64", "qemu-img", "dnsmasq", "ipmitool", "nft", "ip")


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Orphans of this test (a killed 'kpc lab up' leaves its supervisor) become our
    children, so 'kpc lab down' can reap them, and whatever ended on its own is reaped
    here: nothing is left as a zombie."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        reap_children()


def reap_children() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def leftovers(directory: Path) -> list[str]:
    """Everything of the test lab still on this host (empty when 'kpc lab down' worked)."""
    found: list[str] = []
    namespaces = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True)
    for ns in json.loads(namespaces.stdout or "[]"):
        if ns["name"].startswith(f"{NAME}-"):
            found.append(f"namespace {ns['name']}")
    links = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True)
    for link in json.loads(links.stdout or "[]"):
        if link["ifname"].startswith(f"{NAME}ab"):
            found.append(f"link {link['ifname']}")
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    if f"{NAME}_lab" in tables:
        found.append(f"nft table {NAME}_lab")
    if shutil.which("docker"):
        names = subprocess.run(
            ["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True
        ).stdout.split()
        found += [f"container {n}" for n in names if n.startswith(f"{PREFIX}-")]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (proc / "status").read_text()
        except OSError:
            continue
        if str(directory) in cmdline:
            state = next((ln for ln in status.splitlines() if ln.startswith("State:")), "")
            found.append(f"process {proc.name} ({state.strip()}): {cmdline[:120]}")
    if directory.exists():
        found.append(f"directory {directory} ({sorted(p.name for p in directory.iterdir())})")
    return found


def keep_artifacts(directory: Path, test_name: str) -> Path | None:
    """Copy the servers' serial/QEMU/BMC logs, the lab's logs and the services' container
    logs to lab-run/artifacts/TEST (CI uploads that folder)."""
    if not directory.exists():
        return None
    target = ARTIFACTS / test_name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    logs = [p for p in directory.glob("logs/**/*") if p.is_file()]  # logs/kolla/ too
    for path in [*directory.glob("servers/*/*.log"), *logs]:
        rel = path.relative_to(directory)
        (target / rel.parent).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / rel)
    if shutil.which("docker"):
        # the first deploy host's services, and a second one's (kpc lab up --deploy-hosts 2)
        for prefix, suffix in ((PREFIX, ""), (f"{PREFIX}-h2", "-h2")):
            for service in ("dnsmasq", "bootcfg", "registry"):
                logs = subprocess.run(
                    ["docker", "logs", f"{prefix}-{service}"], capture_output=True, text=True
                )
                if suffix and logs.returncode != 0:
                    continue
                (target / f"service-{service}{suffix}.log").write_text(logs.stdout + logs.stderr)
    return target


@pytest.fixture
def lab_dir(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A directory for one test lab; whatever happens, the lab is removed afterwards, and
    on failure its logs are kept first."""
    require_lab_tools()
    directory = tmp_path_factory.mktemp("lab") / NAME
    yield directory
    failed = getattr(request.node, "rep_call", None)
    try:
        if failed is not None and failed.failed:
            kept = keep_artifacts(directory, request.node.name)
            if kept:
                print(f"lab logs kept in {kept}")
    finally:  # a lab left up blocks the next run's lab of the same name
        if (directory / "lab.json").exists():
            kpc(["lab", "down", "--dir", str(directory)])


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


def ipmi(directory: Path, address: str, *command: str) -> str:
    """ipmitool against a lab BMC (password from the lab's file, never argv)."""
    out = subprocess.run(
        [
            *("ipmitool", "-I", "lanplus", "-H", address, "-U", "admin"),
            *("-f", str(directory / "bmc-password"), *command),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def isolated_vm(
    tmp_path: Path,
    name: str,
    tap: str,
    mac: str,
    memory_mib: int = 128,
    firmware: Literal["bios", "uefi"] = "bios",
) -> VmSpec:
    """A lab server on an isolated tap (no bridge, nothing behind it) with an empty 64 MiB
    disk, its files in ``tmp_path``; its vm.json written there."""
    uefi = firmware == "uefi"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "disk.qcow2"), "64M"], check=True
    )
    (tmp_path / "sercon.bin").write_bytes(b"\xf8\x03")
    spec = VmSpec(
        name=name,
        firmware=firmware,
        memory_mib=memory_mib,
        mac=mac,
        netns=None,
        tap=tap,
        disk=tmp_path / "disk.qcow2",
        serial_log=tmp_path / "serial.log",
        qmp_socket=tmp_path / "qmp.sock",
        qemu_log=tmp_path / "qemu.log",
        sercon=None if uefi else tmp_path / "sercon.bin",
        ovmf_code=OVMF_CODE if uefi else None,
        ovmf_vars_template=OVMF_VARS if uefi else None,
        ovmf_vars=tmp_path / "vars.fd" if uefi else None,
    )
    (tmp_path / "vm.json").write_text(spec_to_json(spec))
    return spec
