"""``kpc install-host`` as a sequence of steps, with the operator's answers behind ``Ui``.

detect the OS -> management address -> SSH keys -> site config (written if absent) ->
deploy-host Ignition -> choose the disk (safety rules) -> typed confirmation -> run the
installer -> find the new root by label -> mount, copy kpc's files to /etc/kpc, unmount.

Everything the run creates lives in one work directory (default /run/kpc/install-host,
which also keeps a second install-host from running at the same time) and is removed in a
``finally``, on failure and on Ctrl-C too. ``dry_run`` goes through every step, reading the
host but writing nothing, and reports what it would do.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from appliance.config import Os, SiteConfig, load_config, parse_config
from appliance.drivers import blockdev, process
from appliance.errors import (
    Aborted,
    CommandFailed,
    ConfigError,
    KpcError,
    ToolMissing,
    UsageError,
)
from appliance.inputfile import MAX_TEMPLATE_BYTES, read_text
from appliance.install.address import HostAddress, choose_address, host_addresses
from appliance.install.disks import BlockDevice
from appliance.install.installer import installer_argv
from appliance.install.newroot import (
    INSTALLED_EXECUTABLE,
    KPC_DIR,
    ROOT_LABEL,
    CopyItem,
    copy_into,
    find_root_partition,
    install_executable,
    mounted,
)
from appliance.install.osrelease import OsRelease, TargetOs, detect_os, resolve_target
from appliance.install.safety import Verdict, confirmation_matches
from appliance.install.siteconfig import new_site_config
from appliance.install.survey import Survey, survey
from appliance.keys import AuthorizedKey, KeyCollection, collect_keys
from appliance.render.ignition import render_ignition, site_context
from appliance.resources import KINDS, resource_dir
from appliance.services.units import systemd_services

DEFAULT_WORK_DIR = Path("/run/kpc/install-host")
IGNITION_TEMPLATE = "deployhost.ign.j2"
SECRETS_ENV = "secrets.env"
MOUNT_DIR = "root"  # the new root is mounted at WORK_DIR/root
INSTALLED_SOURCE_DIR = Path("/") / KPC_DIR


class UnsafeDevice(KpcError):
    """The chosen device fails a safety rule; nothing was written."""

    exit_code = 4


class InstallFailed(KpcError):
    """The installer or a step after it failed."""


class Interrupted(KpcError):
    """The operator interrupted the run (Ctrl-C, SIGTERM, SIGHUP)."""

    exit_code = 130


class Ui(Protocol):
    """What the flow needs from whoever talks to the operator (the CLI)."""

    def step(self, text: str) -> None: ...

    def detail(self, text: str) -> None: ...

    def warn(self, text: str) -> None: ...

    def choose_address(self, candidates: Sequence[HostAddress], note: str) -> HostAddress: ...

    def show_keys(self, keys: KeyCollection) -> None: ...

    def show_disks(self, verdicts: Sequence[Verdict]) -> None: ...

    def choose_disk(self, verdicts: Sequence[Verdict]) -> str: ...

    def ask_device_name(self, device: BlockDevice) -> str: ...

    def installer_line(self, line: str) -> None: ...


@dataclass(frozen=True)
class Request:
    config_path: Path
    installer: tuple[str, ...]
    authorized_keys: Path | None = None
    ssh_keys: tuple[Path, ...] = ()
    device: str | None = None
    yes: bool = False
    dry_run: bool = False
    allow_removable: bool = False
    ssh_connection: str | None = None
    address: str | None = None
    os_root: Path = Path("/")
    work_dir: Path = DEFAULT_WORK_DIR
    root_label: str = ROOT_LABEL
    # kpc's own self-contained executable (scripts/build-binary), copied to /opt/bin/kpc on
    # the new root so the installed host can run kpc; None when kpc runs from Python
    executable: Path | None = None


@dataclass
class Outcome:
    device: str = ""
    argv: list[str] = field(default_factory=list)
    config_written: Path | None = None
    root_partition: str | None = None
    copied: list[Path] = field(default_factory=list)
    dry_run: bool = False


@dataclass(frozen=True)
class Prepared:
    """Everything decided before a disk is chosen."""

    detected: OsRelease
    target: TargetOs
    config: SiteConfig
    config_text: str | None  # the new config to write; None when one exists
    keys: list[AuthorizedKey]
    ignition: str
    copy_items: list[CopyItem]


# --- preparing (reads only) -------------------------------------------------------------


def _pick_address(req: Request, ui: Ui) -> tuple[HostAddress, str]:
    """The management address and why it was chosen."""
    addresses = host_addresses()
    if req.address is not None:
        for candidate in addresses:
            if str(candidate.address) == req.address:
                return candidate, "given with --address"
        known = ", ".join(a.describe() for a in addresses) or "none"
        raise UsageError(
            f"--address {req.address} is not a global IPv4 address of this host (it has: {known})"
        )
    choice = choose_address(addresses, req.ssh_connection)
    if choice.chosen is not None:
        ui.detail(f"management address {choice.chosen.describe()}: {choice.note}")
        return choice.chosen, choice.note
    if not choice.candidates:
        raise KpcError(
            "this host has no global IPv4 address to serve the provisioning network from",
            hint="bring up the management network (check 'ip address'), then run again",
        )
    if req.yes:
        if len(choice.candidates) == 1:
            only = choice.candidates[0]
            ui.detail(f"management address {only.describe()}: the host's only global address")
            return only, "the host's only global IPv4 address"
        raise UsageError(
            f"cannot choose the management address without asking ({choice.note})",
            hint="pass --address ADDR, or run 'sudo -E kpc install-host' from your SSH session",
        )
    return ui.choose_address(choice.candidates, choice.note), "chosen by the operator"


def _effective(config: SiteConfig, target: TargetOs) -> SiteConfig:
    """The config with the OS channel and version that will really be installed."""
    os_section = config.os.model_copy(update={"channel": target.channel, "version": target.version})
    return config.model_copy(update={"os": os_section})


def _copy_items(config: SiteConfig, config_path: Path) -> list[CopyItem]:
    items = [CopyItem(config_path, "kpc.yaml")]
    items += [CopyItem(resource_dir(kind, config.paths.source_dir), kind) for kind in KINDS]
    secrets = config.paths.source_dir / SECRETS_ENV
    if secrets.is_file():  # the services' secrets by name (mode 0600 is kept)
        items.append(CopyItem(secrets, SECRETS_ENV))
    return items


def prepare(req: Request, ui: Ui) -> Prepared:
    """Detect, choose the address, collect keys, build the config and Ignition. Writes nothing."""
    ui.step("Detecting the operating system")
    detected = detect_os(req.os_root)
    ui.detail(f"this host runs {detected.describe()}")

    ui.step("Site configuration")
    config_text: str | None = None
    if req.config_path.exists():
        config = load_config(req.config_path)
        ui.detail(f"using {req.config_path} (provisioning address {config.provisioning.address})")
        target = resolve_target(detected, config.os)
    else:
        try:
            target = resolve_target(detected, Os())
        except ConfigError as exc:
            raise ConfigError(
                exc.message,
                hint=f"write {req.config_path} first (kpc config init), set os.channel and "
                "os.version there, then run install-host again",
            ) from None
        address, why = _pick_address(req, ui)
        config_text = new_site_config(address, target, why)
        config = parse_config(config_text, source=str(req.config_path))
        ui.detail(f"{req.config_path} does not exist; kpc will write one for {address.address}")
    for reason in target.reasons:
        ui.detail(reason)
    effective = _effective(config, target)
    if config.paths.source_dir != INSTALLED_SOURCE_DIR:
        ui.warn(
            f"paths.source_dir is {config.paths.source_dir}, but on the installed host kpc's "
            f"files will be in {INSTALLED_SOURCE_DIR}; change the setting there after rebooting"
        )

    ui.step("SSH keys for the 'core' user")
    keys = collect_keys(req.authorized_keys, req.ssh_keys)
    ui.show_keys(keys)
    if not keys.keys:
        raise KpcError(
            "no SSH public keys found: nobody could log in to the installed deploy host",
            hint="add your key to ~/.ssh/authorized_keys on this live host (ssh-copy-id), "
            "or pass --ssh-key FILE.pub",
        )

    ui.step("Rendering the deploy host's Ignition config")
    copy_items = _copy_items(config, req.config_path)
    template = resource_dir("ignition", config.paths.source_dir) / IGNITION_TEMPLATE
    try:
        template_text = read_text(template, what="Ignition template", limit=MAX_TEMPLATE_BYTES)
    except FileNotFoundError:
        raise KpcError(
            f"{template} is missing", hint="kpc's files are incomplete: bring kpc again"
        ) from None
    context = site_context(effective, keys.keys, services=systemd_services(effective))
    ignition = json.dumps(render_ignition(template_text, context, source=str(template)), indent=2)
    ui.detail(f"from {template}: {len(ignition)} bytes")
    return Prepared(detected, target, config, config_text, keys.keys, ignition, copy_items)


def choose_device(req: Request, ui: Ui, found: Survey) -> BlockDevice:
    """Show the disks, take the operator's choice (or --device), apply every safety rule."""
    ui.step("Choosing the disk to install to")
    verdicts = found.verdicts(allow_removable=req.allow_removable)
    ui.show_disks(verdicts)
    if req.device is not None:
        name = blockdev.canonical_device(req.device)
    elif req.yes:
        raise UsageError(
            "--yes needs --device: kpc never picks a disk to erase by itself",
            hint="run without --yes to choose interactively, or add --device /dev/sdX",
        )
    elif not any(v.safe for v in verdicts):
        raise UnsafeDevice(
            "no disk on this host is safe to install to (the reasons are listed above)",
            hint="attach or free a disk; removable disks need --allow-removable",
        )
    else:
        name = blockdev.canonical_device(ui.choose_disk(verdicts))
    verdict = found.check(name, allow_removable=req.allow_removable)
    if not verdict.safe or verdict.device is None:
        shown = req.device or name
        raise UnsafeDevice(
            f"refusing to install to {shown}: " + "; ".join(verdict.refusals),
            hint="nothing was written; choose a whole, unused, writable disk",
        )
    return verdict.device


# --- doing ------------------------------------------------------------------------------


@contextmanager
def work_dir(path: Path) -> Iterator[Path]:
    """Create the run's private directory (refusing while another run holds it); remove it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pid_file = path / "pid"
    if path.exists():
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid and pid != os.getpid() and Path(f"/proc/{pid}").exists():
            raise KpcError(
                f"another kpc install-host is running (pid {pid}, work directory {path})",
                hint="wait for it to finish; two installers must never run at once",
            )
        stale = [p for p in (path, path / MOUNT_DIR) if blockdev.is_mountpoint(p)]
        if stale:
            raise KpcError(
                f"a previous install-host left {stale[0]} mounted",
                hint=f"unmount it (umount {stale[0]}), then run again",
            )
        shutil.rmtree(path)
    path.mkdir(mode=0o700)
    try:
        pid_file.write_text(f"{os.getpid()}\n")
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _identity(device: BlockDevice) -> tuple[object, ...]:
    return (device.maj_min, device.size, device.model, device.serial)


def _run_installer(argv: list[str], device: str, ui: Ui) -> None:
    try:
        process.stream(argv, ui.installer_line)
    except ToolMissing as exc:
        raise InstallFailed(
            f"the installer {argv[0]} is not installed on this host; {device} was not touched",
            hint="on Flatcar it is /usr/bin/flatcar-install; elsewhere download flatcar-install "
            "from https://github.com/flatcar/init (bin/flatcar-install) and pass "
            "--installer PATH",
        ) from exc
    except CommandFailed as exc:
        raise InstallFailed(
            f"the installer failed with exit code {exc.returncode}: {shlex.join(argv)}",
            hint=f"read its output above; {device} may be partly written and will not boot. "
            "Nothing is left mounted; fix the cause and run kpc install-host again",
        ) from None


def install(req: Request, ui: Ui, prepared: Prepared, device: BlockDevice) -> Outcome:
    """Confirm, write the config, run the installer, copy kpc's files. Cleans up always."""
    ignition_path = req.work_dir / "deployhost.ign"
    argv = installer_argv(req.installer, device.path, prepared.target, ignition_path)
    outcome = Outcome(device=device.path, argv=argv, dry_run=req.dry_run)

    if req.dry_run:
        _report_dry_run(req, ui, prepared, device, argv)
        return outcome

    phase = "before the installer started; nothing was written"
    try:
        if not req.yes:
            typed = ui.ask_device_name(device)
            if not confirmation_matches(typed, device):
                raise Aborted(
                    f"you typed {typed.strip()!r}, not {device.name}: nothing was written",
                    hint=f"type the device name exactly ({device.name}) to erase it",
                )

        if prepared.config_text is not None:
            ui.step(f"Writing the site config {req.config_path}")
            req.config_path.parent.mkdir(parents=True, exist_ok=True)
            req.config_path.write_text(prepared.config_text, encoding="utf-8")
            outcome.config_written = req.config_path
            phase = f"before the installer started; only {req.config_path} was written"

        with work_dir(req.work_dir):
            ignition_path.write_text(prepared.ignition, encoding="utf-8")
            ignition_path.chmod(0o600)
            # The host may have changed while the operator was typing: judge again.
            again = survey().check(device.path, allow_removable=req.allow_removable)
            refusals = list(again.refusals)
            if again.device is not None and _identity(again.device) != _identity(device):
                refusals.append("is no longer the disk that was chosen (size, model or serial)")
            if refusals:
                raise UnsafeDevice(
                    f"refusing to install to {device.path}: " + "; ".join(refusals),
                    hint="the device changed since it was chosen; nothing was written",
                )
            ui.step(f"Installing to {device.path}: {shlex.join(argv)}")
            phase = (
                f"while the installer was writing {device.path}: it is partly written and "
                "will not boot"
            )
            _run_installer(argv, device.path, ui)
            phase = f"after the installer finished: {device.path} may lack kpc's files"
            ui.step(f"Finding the new root filesystem (label {req.root_label})")
            root_part = find_root_partition(device.path, req.root_label)
            outcome.root_partition = root_part
            ui.step(f"Copying kpc's files to /etc/kpc on {root_part}")
            with mounted(root_part, req.work_dir / MOUNT_DIR) as root:
                outcome.copied = copy_into(root, prepared.copy_items)
                if req.executable is not None:
                    outcome.copied.append(install_executable(root, req.executable))
            for path in outcome.copied:
                ui.detail(f"/{path}")
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted {phase}",
            hint="nothing is left mounted; run kpc install-host again to finish",
        ) from None
    return outcome


def _report_dry_run(
    req: Request, ui: Ui, prepared: Prepared, device: BlockDevice, argv: list[str]
) -> None:
    ui.step(f"Dry run: {device.path} would be erased; nothing below is done")
    if not req.yes:
        ui.detail(f"would ask you to type {device.name} to confirm")
    if prepared.config_text is not None:
        ui.detail(f"would write the site config {req.config_path}:")
        for line in prepared.config_text.splitlines():
            ui.detail(f"    {line}")
    ui.detail(
        f"would create {req.work_dir} and write the Ignition config to {argv[argv.index('-i') + 1]}"
    )
    ui.detail(f"would run: {shlex.join(argv)}")
    ui.detail(
        f"would mount the partition labelled {req.root_label} on {device.path} "
        f"at {req.work_dir / MOUNT_DIR}"
    )
    for item in prepared.copy_items:
        ui.detail(f"would copy {item.source} to /etc/kpc/{item.name}")
    if req.executable is not None:
        ui.detail(f"would copy {req.executable} to /{INSTALLED_EXECUTABLE}")
    ui.detail(f"would unmount it and remove {req.work_dir}")


def run(req: Request, ui: Ui) -> Outcome:
    """The whole of ``kpc install-host``."""
    try:
        prepared = prepare(req, ui)
        device = choose_device(req, ui, survey())
    except KeyboardInterrupt:
        raise Interrupted("interrupted; nothing was written") from None
    return install(req, ui, prepared, device)
