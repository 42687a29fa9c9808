"""The node OS's emergency hook (dracut/99kpc-flatcar/kpc-ignition-failed.sh): what it prints
on the console when an Ignition stage failed, run by sh with stand-ins for the initramfs's
systemctl and journalctl, and what 'kpc lab status' makes of that console."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from appliance.lab import nodeos
from appliance.lab.status import console_summary, is_problem

HOOK = Path(nodeos.__file__).parent / "nodeos" / "dracut" / "99kpc-flatcar"
HOOK_FILE = HOOK / "kpc-ignition-failed.sh"
TOKEN = "kpc-test-token-0f9a"  # a made-up secret that must not be printed
CALCULATED = "9b71d224" * 16
EXPECTED = "0" * 128
WHY = (
    'failed to create file "/sysroot/etc/kpc-fault": hash verification failed '
    f"(calculated {CALCULATED} but expected {EXPECTED})"
)
FAILED = (
    "Ignition failed: failed to create files: failed to create files: error creating "
    f"/sysroot/etc/kpc-fault: {WHY}"
)
CONFIG = {
    "ignition": {"version": "3.3.0"},
    "storage": {
        "files": [
            {
                "path": "/etc/kpc/bootcfg-token",
                "contents": {"source": f"data:,Authorization%3A%20Bearer%20{TOKEN}%0A"},
            },
            {
                "path": "/etc/kpc-fault",
                "contents": {"source": "data:,hello", "verification": {"hash": EXPECTED}},
            },
        ]
    },
}
OP = "files: createFilesystemsFiles: createFiles: op(1):"
INFO, WARNING, CRIT = 6, 4, 2  # syslog priorities (RFC 5424)
# The journal of ignition-files.service as Debian's Ignition 2.14 (--log-to-stdout, so all at
# info) wrote it for a file whose hash does not match (its files stage run by hand in the
# node OS's initramfs, 2026-11-29): its log lines, then, on stderr, the stage and the config.
FILES_JOURNAL = [
    (INFO, "INFO     : Ignition Debian 2.14.0+ds1-1+b19"),
    (INFO, "INFO     : Stage: files"),
    (INFO, 'INFO     : no config dir at "/usr/lib/ignition/base.d"'),
    (INFO, f'INFO     : {OP} [started]  writing file "/sysroot/etc/kpc-fault"'),
    (
        INFO,
        f'CRITICAL : {OP} Error fetching file "/sysroot/etc/kpc-fault": ' + WHY.split(": ", 1)[1],
    ),
    (INFO, "files failed"),
    (INFO, "Full config:"),
    *((INFO, line) for line in json.dumps(CONFIG, indent=2).splitlines()),
    (INFO, f"CRITICAL : {FAILED}"),
]
# The fetch stage logs to syslog (Debian's unit has no --log-to-stdout): its priority says
# the level, and the message has no level word. What it logged for a config URL it could not
# reach (run by hand with --fetch-timeout=20s; the URL here is a lab one), after the earlier
# stage's lines.
URL = "http://198.18.22.2:8089/ignition?mac=52-54-00-c6-12-02"
FETCH_JOURNAL = [
    (INFO, "Stage: fetch-offline"),
    (INFO, "Stage: fetch"),
    (INFO, f"GET {URL}: attempt #8"),
    (INFO, f'GET error: Get "{URL}": dial tcp 198.18.22.2:8089: connect: network is unreachable'),
    (WARNING, "failed to fetch config: unable to fetch resource in time"),
    (CRIT, "failed to acquire config: unable to fetch resource in time"),
    (CRIT, "Ignition failed: unable to fetch resource in time"),
]


PXE_CMDLINE = f"initrd=flatcar_production_pxe_image.cpio.gz ignition.config.url={URL}"
DISK_CMDLINE = "BOOT_IMAGE=/flatcar/vmlinuz-a root=LABEL=ROOT flatcar.first_boot=detected"


def _run_hook(
    tmp_path: Path, failed: str, journal: list[tuple[int, str]], cmdline: str = PXE_CMDLINE
) -> str:
    """Source the hook as dracut-emergency does; its console output."""
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # systemctl is-failed --quiet UNIT: true for the failed unit only
    (bin_dir / "systemctl").write_text(
        f'#!/bin/sh\n[ "$1" = is-failed ] && [ "$3" = "{failed}" ]\n'
    )
    # journalctl -t ignition --no-pager -o cat [-p err]: the messages (of priority err or
    # worse with -p err)
    (tmp_path / "journal").write_text("".join(f"{p}\t{m}\n" for p, m in journal))
    (bin_dir / "journalctl").write_text(
        '#!/bin/sh\ncase "$*" in\n'
        '"-t ignition --no-pager -o cat") worst=7 ;;\n'
        '"-t ignition --no-pager -o cat -p err") worst=3 ;;\n'
        "*) exit 2 ;;\nesac\n"
        f"awk -F '\\t' -v worst=$worst '$1 <= worst {{ print $2 }}' {tmp_path / 'journal'}\n"
    )
    for tool in ("systemctl", "journalctl"):
        (bin_dir / tool).chmod(0o755)
    console = tmp_path / "console"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "KPC_CONSOLE": str(console),
        "KPC_CMDLINE": str(tmp_path / "cmdline"),
    }
    subprocess.run(["sh", "-c", f". {HOOK_FILE}"], env=env, check=True)
    return console.read_text()


def test_a_failed_stage_puts_ignitions_errors_on_the_console_without_the_config(
    tmp_path: Path,
) -> None:
    out = _run_hook(tmp_path, "ignition-files.service", FILES_JOURNAL)
    lines = out.splitlines()
    assert lines[0] == (
        "kpc: Ignition stopped this boot (failed: ignition-files.service); Ignition's errors:"
    )
    assert lines[1].startswith(f"CRITICAL : {OP} Error fetching file")
    assert lines[2] == f"CRITICAL : {FAILED}"
    assert lines[3].startswith("kpc: fix the config this machine was served")
    assert len(lines) == 4
    assert TOKEN not in out and "Full config" not in out and "INFO" not in out
    # 'kpc lab status' and 'kpc lab wait': Ignition's own message is the server's line, even
    # after systemd's failed-stage line and the emergency shell's lines
    console = [
        "[FAILED] Failed to start ignition-files.service - Ignition (files).",
        "[DEPEND] Dependency failed for ignition-complete.target - Ignition Complete.",
        *lines,
        "Entering emergency mode. Exit the shell to continue.",
        "Cannot open access to console, the root account is locked.",
        "Press Enter to continue.",
    ]
    summary = console_summary(console)
    assert summary == FAILED
    assert is_problem(summary)


def test_a_failed_first_boot_from_disk_says_to_install_again(tmp_path: Path) -> None:
    # the config came from the OEM partition: booting again would apply it again
    out = _run_hook(tmp_path, "ignition-files.service", FILES_JOURNAL, DISK_CMDLINE)
    lines = out.splitlines()
    assert lines[2] == f"CRITICAL : {FAILED}"
    assert lines[3].startswith("kpc: this config is the installed system's, written to the OEM")
    assert "booting again repeats it" in lines[3]
    assert "kpc nodes set-boot <this machine's MAC> install, and PXE-boot it" in lines[3]
    assert len(lines) == 4
    assert console_summary(lines) == FAILED


def test_no_failed_stage_prints_nothing(tmp_path: Path) -> None:
    # the emergency shell for another reason (a root that never came): not Ignition's
    assert _run_hook(tmp_path, "none.service", FILES_JOURNAL) == ""


def test_a_failed_stage_without_an_error_line_says_so(tmp_path: Path) -> None:
    out = _run_hook(tmp_path, "ignition-fetch.service", [(INFO, "INFO     : Stage: fetch")])
    assert out.splitlines()[:2] == [
        "kpc: Ignition stopped this boot (failed: ignition-fetch.service); Ignition's errors:",
        "(Ignition logged no error line)",
    ]


def test_a_failed_syslog_stage_prints_its_errors_by_priority(tmp_path: Path) -> None:
    out = _run_hook(tmp_path, "ignition-fetch.service", FETCH_JOURNAL)
    assert out.splitlines()[:4] == [
        "kpc: Ignition stopped this boot (failed: ignition-fetch.service); Ignition's errors:",
        "failed to acquire config: unable to fetch resource in time",
        "Ignition failed: unable to fetch resource in time",
        "kpc: fix the config this machine was served (ignition-validate checks its form) or "
        "its config server, then boot it again",
    ]
    summary = console_summary(out.splitlines())
    assert summary == "Ignition failed: unable to fetch resource in time" and is_problem(summary)


def test_the_module_installs_the_hook_and_its_tools() -> None:
    setup = (HOOK / "module-setup.sh").read_text()
    assert 'inst_hook emergency 50 "$moddir/kpc-ignition-failed.sh"' in setup
    installed = next(line for line in setup.splitlines() if "inst_multiple" in line).split()
    assert {"grep", "journalctl", "systemctl"} <= set(installed)
