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
# The journal of ignition-files.service as Debian's Ignition 2.14 (--log-to-stdout) wrote it
# for a file whose hash does not match (run by hand on the node OS's initramfs, 2026-11-29):
# its log lines, then, on stderr, the stage's name and the whole config.
OP = "files: createFilesystemsFiles: createFiles: op(1):"
JOURNAL = "\n".join(
    [
        "INFO     : Ignition Debian 2.14.0+ds1-1+b19",
        "INFO     : Stage: files",
        'INFO     : no config dir at "/usr/lib/ignition/base.d"',
        f'INFO     : {OP} [started]  writing file "/sysroot/etc/kpc-fault"',
        f'CRITICAL : {OP} Error fetching file "/sysroot/etc/kpc-fault": ' + WHY.split(": ", 1)[1],
        "files failed",
        "Full config:",
        json.dumps(CONFIG, indent=2),
        f"CRITICAL : {FAILED}",
    ]
)


def _run_hook(tmp_path: Path, failed: str, journal: str) -> str:
    """Source the hook as dracut-emergency does; its console output."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # systemctl is-failed --quiet UNIT: true for the failed unit only
    (bin_dir / "systemctl").write_text(
        f'#!/bin/sh\n[ "$1" = is-failed ] && [ "$3" = "{failed}" ]\n'
    )
    (tmp_path / "journal").write_text(journal + "\n")
    (bin_dir / "journalctl").write_text(
        '#!/bin/sh\n[ "$*" = "-t ignition --no-pager -o cat" ] || exit 2\n'
        f"cat {tmp_path / 'journal'}\n"
    )
    for tool in ("systemctl", "journalctl"):
        (bin_dir / tool).chmod(0o755)
    console = tmp_path / "console"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "KPC_CONSOLE": str(console)}
    subprocess.run(["sh", "-c", f". {HOOK_FILE}"], env=env, check=True)
    return console.read_text()


def test_a_failed_stage_puts_ignitions_errors_on_the_console_without_the_config(
    tmp_path: Path,
) -> None:
    out = _run_hook(tmp_path, "ignition-files.service", JOURNAL)
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


def test_no_failed_stage_prints_nothing(tmp_path: Path) -> None:
    # the emergency shell for another reason (a root that never came): not Ignition's
    assert _run_hook(tmp_path, "none.service", JOURNAL) == ""


def test_a_failed_stage_without_an_error_line_says_so(tmp_path: Path) -> None:
    out = _run_hook(tmp_path, "ignition-fetch.service", "INFO     : Stage: fetch")
    assert out.splitlines()[:2] == [
        "kpc: Ignition stopped this boot (failed: ignition-fetch.service); Ignition's errors:",
        "(Ignition logged no error line)",
    ]


def test_the_module_installs_the_hook_and_its_tools() -> None:
    setup = (HOOK / "module-setup.sh").read_text()
    assert 'inst_hook emergency 50 "$moddir/kpc-ignition-failed.sh"' in setup
    installed = next(line for line in setup.splitlines() if "inst_multiple" in line).split()
    assert {"grep", "journalctl", "systemctl"} <= set(installed)
