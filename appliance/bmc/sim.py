"""Simulated BMCs for tests and the virtual lab: ``python -m appliance.bmc.sim``.

Not a user-facing command. One process serves one BMC, or a farm of in-memory BMCs on
consecutive addresses (``--count``), over IPMI (UDP, one selectors loop), Redfish (HTTPS,
one asyncio loop, ``--protocol redfish``) or both (``--protocol both``, one machine behind
two services, as on most servers):

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
    ap.add_argument("--protocol", choices=("ipmi", "redfish", "both"), default="ipmi")
    ap.add_argument("--redfish-port", type=int, default=443)
    ap.add_argument("--reset-types", help="Redfish ResetTypes offered (comma-separated)")
    ap.add_argument("--hang-on-reset", action="store_true",
                    help="Redfish: accept a restart, never answer nor do it")  # fmt: skip
    ap.add_argument("--max-sessions", type=int, default=16, help="Redfish session limit")
    ap.add_argument("--no-sessions", action="store_true", help="Redfish: basic auth only")
    ap.add_argument("--fingerprints", type=Path, help="write the certificates' SHA-256 here")
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
    backends = [_backend(args) for _ in range(args.count)]
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    redfish: threading.Thread | None = None
    try:
        if args.protocol in ("redfish", "both"):
            redfish = _start_redfish(args, backends, password, events, stop)
        if args.protocol == "redfish":
            log.info("serving %d BMC(s) on %s..%s (Redfish)", len(backends), first,
                     first + len(backends) - 1)  # fmt: skip
            stop.wait()
            return 0
        bmcs: list[SimBmc] = []
        try:
            for index, backend in enumerate(backends):
                bmcs.append(
                    SimBmc(
                        backend,
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
        farm = SimFarm(bmcs)
        log.info(
            "serving %d BMC(s) on %s..%s port %d", len(bmcs), first, first + len(bmcs) - 1,
            args.port,
        )  # fmt: skip
        try:
            farm.serve(stop.is_set)
        finally:
            farm.close()
    finally:
        stop.set()
        if redfish is not None:
            redfish.join(10)
        for backend in backends:
            close = getattr(backend, "close", None)
            if callable(close):
                close()
    return 0


def _start_redfish(
    args: argparse.Namespace,
    backends: Sequence[MachineBackend],
    password: str,
    events: _EventLog | None,
    stop: threading.Event,
) -> threading.Thread:
    """The Redfish service of every BMC, on its own thread and event loop; returns once it
    listens (or exits the process if it cannot)."""
    from appliance.drivers.redfish_server import RedfishFarm, RedfishFaults, serve_forever

    reset_types = (
        tuple(t.strip() for t in args.reset_types.split(",")) if args.reset_types else None
    )
    faults = RedfishFaults(
        delay=args.delay,
        hang_on_reset=args.hang_on_reset,
        max_sessions=args.max_sessions,
        no_sessions=args.no_sessions,
        **({"reset_types": reset_types} if reset_types else {}),
    )
    farm = RedfishFarm(port=args.redfish_port)
    first = ipaddress.ip_address(args.listen)
    for index, backend in enumerate(backends):
        farm.add(str(first + index), backend, {args.user: password}, faults, events,
                 mac=getattr(backend, "mac", None))  # fmt: skip
    started, failed = threading.Event(), []

    def run() -> None:
        try:
            serve_forever(farm, stop.is_set, started)
        except Exception as exc:  # cannot listen: the process must not look healthy
            failed.append(exc)
            started.set()

    thread = threading.Thread(target=run, name="redfish", daemon=True)
    thread.start()
    started.wait(60)
    if failed:
        raise SystemExit(f"sim: Redfish service: {failed[0]}")
    if args.fingerprints is not None:
        args.fingerprints.write_text(json.dumps(farm.fingerprints))
    return thread


if __name__ == "__main__":
    sys.exit(main())
