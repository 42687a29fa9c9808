"""Simulated BMCs for tests and the virtual lab: ``python -m appliance.bmc.sim``.

Not a user-facing command. One process serves one BMC, or a farm of in-memory BMCs on
consecutive addresses (``--count``), from one selectors loop:

    KPC_SIM_PASSWORD=... python -m appliance.bmc.sim --listen 127.0.5.1 --count 250
    python -m appliance.bmc.sim --listen 198.18.1.11 --password-file F \\
        --backend qemu --vm-spec vm1.json

The password comes from the environment variable KPC_SIM_PASSWORD or a file, never from
the command line (it would show in ``ps``). ``--events FILE`` appends one JSON line per
power or boot-device action, for tests to check what a client really did.
SIGTERM or SIGINT stop the simulator; backends with a ``close()`` (QEMU) are closed.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from appliance.bmc import protocol as p
from appliance.bmc.backend import MachineBackend
from appliance.bmc.memory import MemoryBackend
from appliance.drivers.ipmi_server import SimBmc, SimFarm, SimFaults
from appliance.errors import KpcError

PASSWORD_ENV = "KPC_SIM_PASSWORD"
log = logging.getLogger("appliance.bmc.sim")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m appliance.bmc.sim",
        description="Simulated IPMI BMCs (RMCP+ on UDP). Password: $KPC_SIM_PASSWORD or "
        "--password-file.",
    )
    ap.add_argument("--listen", required=True, help="address of the (first) BMC")
    ap.add_argument("--port", type=int, default=p.RMCP_PORT)
    ap.add_argument("--count", type=int, default=1, help="BMCs on consecutive addresses")
    ap.add_argument("--user", default="admin")
    ap.add_argument("--password-file", type=Path)
    ap.add_argument("--backend", choices=("memory", "qemu"), default="memory")
    ap.add_argument("--vm-spec", type=Path, help="VM spec JSON (--backend qemu)")
    ap.add_argument("--power", choices=("on", "off"), default="off", help="initial power")
    ap.add_argument("--iana", type=int, default=p.ASF_IANA, help="IANA number in the pong")
    ap.add_argument("--events", type=Path, help="append JSON lines of actions to this file")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    ap.add_argument("--drop-first", type=int, default=0, help="ignore the first N packets")
    ap.add_argument("--mute-after", type=int, help="stop answering after N packets")
    ap.add_argument(
        "--mute-on", choices=("status", "bootdev", "control"), help="go silent at this command"
    )
    ap.add_argument("--forget-after", type=int, help="drop all sessions once, after N packets")
    ap.add_argument("--busy", type=int, default=0, help="first N commands answer 'busy'")
    ap.add_argument("--no-bootdev", action="store_true", help="no boot-device support")
    ap.add_argument("--verbose", "-v", action="store_true")
    return ap


def _password(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    if args.password_file is not None:
        try:
            value = str(args.password_file.read_text(encoding="utf-8")).strip()
        except OSError as exc:
            raise SystemExit(f"sim: cannot read {args.password_file}: {exc.strerror}") from None
    else:
        value = str(environ.get(PASSWORD_ENV, ""))
    if not value:
        raise SystemExit(f"sim: set {PASSWORD_ENV} or give --password-file (not an argument)")
    return value


def _backend(args: argparse.Namespace) -> MachineBackend:
    if args.backend == "qemu":
        if args.vm_spec is None:
            raise SystemExit("sim: --backend qemu needs --vm-spec FILE")
        from appliance.bmc.qemu_backend import QemuBackend  # lab-only dependency

        backend: MachineBackend = QemuBackend.from_file(args.vm_spec)
        return backend
    return MemoryBackend(power=args.power)


class _EventLog:
    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def __call__(self, address: str, action: str, details: Mapping[str, Any]) -> None:
        record = {"time": time.time(), "bmc": address, "action": action, **details}
        self._stream.write(json.dumps(record) + "\n")
        self._stream.flush()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="sim %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if args.count < 1:
        raise SystemExit("sim: --count must be at least 1")
    if args.count > 1 and args.backend != "memory":
        raise SystemExit("sim: a farm (--count > 1) uses the memory backend only")
    password = _password(args, os.environ if environ is None else environ)
    faults = SimFaults(
        delay=args.delay,
        drop_first=args.drop_first,
        mute_after=args.mute_after,
        mute_on=args.mute_on,
        forget_after=args.forget_after,
        busy=args.busy,
        no_bootdev=args.no_bootdev,
    )
    first = ipaddress.ip_address(args.listen)
    events = _EventLog(args.events.open("a", encoding="utf-8")) if args.events else None
    bmcs: list[SimBmc] = []
    try:
        for index in range(args.count):
            bmcs.append(
                SimBmc(
                    _backend(args),
                    address=str(first + index),
                    port=args.port,
                    users={args.user: password},
                    faults=faults,
                    iana=args.iana,
                    events=events,
                )
            )
    except KpcError as exc:
        for bmc in bmcs:
            bmc.close()
        raise SystemExit(f"sim: {exc.message}") from None
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    farm = SimFarm(bmcs)
    log.info(
        "serving %d BMC(s) on %s..%s port %d", len(bmcs), first, first + len(bmcs) - 1, args.port
    )
    try:
        farm.serve(stop.is_set)
    finally:
        farm.close()
        for bmc in bmcs:
            close = getattr(bmc.backend, "close", None)
            if callable(close):
                close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
