"""`kpc install-host`: install the deploy host from a live CoreOS, safely."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType

import typer
from rich.markup import escape
from rich.table import Table

from appliance.cli.common import Cli, cli
from appliance.errors import Aborted, UsageError
from appliance.install import flow
from appliance.install.address import HostAddress
from appliance.install.disks import BlockDevice, human_size
from appliance.install.installer import parse_installer
from appliance.install.safety import Verdict
from appliance.keys import KeyCollection, authorized_keys_fragments, authorized_keys_path

HELP = """Install this live-booted Flatcar (or legacy CoreOS) host to disk as kpc's deploy host.

Run it as 'sudo -E kpc install-host' on the live system, from an SSH session.

 1. detect the OS channel and version (used here and on every node)
 2. pick the management address (your SSH session's, or ask)
 3. collect and show the SSH keys (authorized_keys, authorized_keys.d/, --ssh-key)
 4. write the site config if absent; render the deploy host Ignition
 5. list the disks; refuse partitions, read-only, mounted, in-use,
    boot-media and (without --allow-removable) removable disks
 6. make you type the disk's name (--yes skips only this)
 7. run flatcar-install (or --installer), showing its output
 8. copy kpc's config and files to /etc/kpc on the new root

--dry-run looks at everything and prints each step and the exact
installer command, but writes nothing.
"""


class CliUi:
    """The flow's questions and reports, on the terminal."""

    def __init__(self, c: Cli) -> None:
        self.c = c

    def step(self, text: str) -> None:
        self.c.out.print(f"[bold]==> {escape(text)}[/]")

    def detail(self, text: str) -> None:
        self.c.out.print(f"    {escape(text)}")

    def warn(self, text: str) -> None:
        self.c.err.print(f"[bold yellow]warning:[/] {escape(text)}")

    def _ask(self, question: str) -> str:
        try:
            answer: str = typer.prompt(question, default="", show_default=False, err=True)
        except typer.Abort:
            raise Aborted("no answer (end of input); nothing was written") from None
        return answer

    def choose_address(self, candidates: Sequence[HostAddress], note: str) -> HostAddress:
        self.detail(note)
        self.detail("which address should the deploy host serve the provisioning network on?")
        for number, candidate in enumerate(candidates, 1):
            self.detail(f"  {number}) {candidate.describe()}")
        answer = self._ask(f"Address [1-{len(candidates)}]").strip()
        for number, candidate in enumerate(candidates, 1):
            if answer in {str(number), str(candidate.address)}:
                return candidate
        raise Aborted(
            f"{answer!r} is not one of the listed addresses; nothing was written",
            hint="run again and answer with a number from the list, or pass --address",
        )

    def show_keys(self, keys: KeyCollection) -> None:
        for path, count in keys.read:
            self.detail(f"{path}: {count} key{'s' if count != 1 else ''}")
        for path in keys.missing:
            self.detail(f"{path}: not present")
        for problem in keys.problems:
            self.warn(f"skipped {problem}")
        for key in keys.duplicates:
            self.detail(f"duplicate skipped: {key.fingerprint} ({key.source}:{key.lineno})")
        for key in keys.keys:
            self.detail(f"  {key.describe()}")

    def show_disks(self, verdicts: Sequence[Verdict]) -> None:
        table = Table(box=None, pad_edge=False, padding=(0, 2, 0, 4))
        for column in ("DEVICE", "SIZE", "MODEL", "SERIAL", "TRAN", "MOUNTS", "STATUS"):
            table.add_column(column, overflow="fold")  # wrapped on a narrow terminal, never cut
        for verdict in verdicts:
            device = verdict.device
            if device is None:
                continue
            table.add_row(
                escape(device.path),
                human_size(device.size),
                escape(device.describe()),
                escape(device.serial or "-"),
                escape(device.tran or "-"),
                escape(_mounts(device)),
                "[green]can be used[/]" if verdict.safe else "[red]refused[/]",
            )
        self.c.out.print(table)
        for verdict in verdicts:
            if verdict.device is not None and not verdict.safe:
                self.detail(f"{verdict.device.path} is refused:")
                for reason in verdict.refusals:
                    self.detail(f"  - {reason}")

    def choose_disk(self, verdicts: Sequence[Verdict]) -> str:
        usable = [v.device.name for v in verdicts if v.safe and v.device is not None]
        return self._ask(f"Disk to install to ({', '.join(usable)})").strip()

    def ask_device_name(self, device: BlockDevice) -> str:
        what = ", ".join(
            bit
            for bit in (human_size(device.size), device.describe(), device.serial, device.tran)
            if bit and bit != "-"
        )
        self.c.err.print(
            f"[bold red]Everything on {escape(device.path)} ({escape(what)}) will be erased.[/]"
        )
        return self._ask(f"Type {device.name} to erase it and install, anything else to stop")

    def installer_line(self, line: str) -> None:
        self.c.out.print(f"    | {escape(line)}", soft_wrap=True)


def _mounts(device: BlockDevice) -> str:
    found = [f"{n.name}:{m}" for n in device.walk() for m in n.mountpoints]
    return ", ".join(found) or "-"


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (a dropped SSH session) interrupt like Ctrl-C, so cleanup runs;
    SIGINT too, even when kpc was started with it ignored (a background job of a script)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous: dict[signal.Signals, signal._HANDLER] = {}
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with suppress(ValueError):  # not the main thread: leave signals alone
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def install_host(
    ctx: typer.Context,
    device: str | None = typer.Option(
        None, "--device", "-d", help="The disk to erase and install to (e.g. /dev/sdb)."
    ),
    yes: bool = typer.Option(
        False, "--yes", "-y", help="Do not ask to type the disk's name (needs --device)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show every step and the installer command; write nothing."
    ),
    allow_removable: bool = typer.Option(
        False, "--allow-removable", help="Allow installing to a removable disk."
    ),
    ssh_key: list[Path] = typer.Option(
        [], "--ssh-key", help="Also authorize the public keys in this file (repeatable)."
    ),
    installer: str | None = typer.Option(
        None,
        "--installer",
        help="Installer command (default: flatcar-install); kpc appends -d -C -V -i [-b].",
    ),
    address: str | None = typer.Option(
        None, "--address", help="Management address to use when writing a new site config."
    ),
    work_dir: Path = typer.Option(flow.DEFAULT_WORK_DIR, "--work-dir", hidden=True),
    os_root: Path = typer.Option(Path("/"), "--os-root", hidden=True),
) -> None:
    c = cli(ctx)
    if not dry_run and os.geteuid() != 0:
        raise UsageError(
            "kpc install-host must run as root (it partitions a disk and mounts it)",
            hint="run it as 'sudo -E kpc install-host' (-E keeps SSH_CONNECTION)",
        )
    authorized = authorized_keys_path(c.environ, os.geteuid())
    request = flow.Request(
        config_path=c.config_path.absolute(),
        installer=parse_installer(installer),
        authorized_keys=authorized,
        ssh_keys=(*authorized_keys_fragments(authorized), *ssh_key),
        device=device,
        yes=yes,
        dry_run=dry_run,
        allow_removable=allow_removable,
        ssh_connection=c.environ.get("SSH_CONNECTION"),
        address=address,
        os_root=os_root,
        work_dir=work_dir,
        executable=Path(sys.executable) if getattr(sys, "frozen", False) else None,
    )
    with _signals_interrupt():
        outcome = flow.run(request, CliUi(c))
    if outcome.dry_run:
        c.out.print("[bold]Dry run finished: nothing was written.[/]")
        return
    c.out.print(f"[bold green]Installed to {escape(outcome.device)}.[/] Next:")
    c.out.print(
        f"  1. reboot (remove the live media, or make sure the machine boots from "
        f"{escape(outcome.device)});\n"
        "  2. SSH in again as core;\n"
        "  3. load kpc's container images: kpc images load BUNDLE (made by kpc images save\n"
        "     on the machine that built them; a host with Python can: kpc images build);\n"
        "  4. start kpc's services: kpc up"
    )


def register(app: typer.Typer) -> None:
    app.command("install-host", help=HELP)(install_host)
