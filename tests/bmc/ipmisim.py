"""OpenIPMI's ipmi_sim as an independent BMC: a minimal lan.conf and emulator script.

Power is kept by a tiny chassis-control program (ipmi_sim runs ``PROG get power`` and
``PROG set power 1``) writing into the test's directory. The password lives in lan.conf
(mode 600), which is how ipmi_sim takes it; it never appears on a command line.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import require_root, require_tool, wait_for

CHASSIS = """\
#!/bin/sh
# ipmi_sim chassis control: "get NAME..." prints NAME:VALUE lines; "set NAME VALUE..." stores
dir=$(dirname "$0")/chassis
mkdir -p "$dir"
op=$1; shift
case "$op" in
get) for k in "$@"; do
       v=$(cat "$dir/$k" 2>/dev/null) || v=
       [ -n "$v" ] || { [ "$k" = boot ] && v=default || v=0; }
       printf '%s:%s\\n' "$k" "$v"
     done ;;
set) while [ $# -ge 2 ]; do printf '%s' "$2" > "$dir/$1"; shift 2; done ;;
esac
"""

EMU = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
"""


@contextmanager
def ipmi_sim(workdir: Path, address: str, user: str, password: str) -> Iterator[Path]:
    """Run ipmi_sim on ADDRESS:623; yields the file holding its power state ("0"/"1")."""
    require_root()
    require_tool("ipmi_sim", "ipmiping")
    workdir.mkdir(parents=True, exist_ok=True)
    chassis = workdir / "chassis.sh"
    chassis.write_text(CHASSIS)
    chassis.chmod(0o755)
    conf = workdir / "lan.conf"
    conf.touch(mode=0o600)
    conf.write_text(
        f"""\
name "kpcd"
set_working_mc 0x20
  startlan 1
    addr {address} 623
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{chassis}"
  user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
"""
    )
    (workdir / "bmc.emu").write_text(EMU)
    (workdir / "state").mkdir(exist_ok=True)
    log = workdir / "ipmi_sim.log"
    argv = ["ipmi_sim", "-c", str(conf), "-f", str(workdir / "bmc.emu"), "-s",
            str(workdir / "state"), "-n"]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        probe = ["ipmiping", "-r", "2.0", "-c", "1", "-t", "1", address]

        def answers() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"ipmi_sim exited: {log.read_text()}")
            return subprocess.run(probe, capture_output=True, check=False).returncode == 0

        wait_for(answers, 15, f"ipmi_sim on {address}")
        yield workdir / "chassis" / "power"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
