"""Simulated BMCs: pyghmi's BMC server classes, made faithful enough for real clients.

The only module that imports pyghmi's *server* side (the client side is ``ipmi.py``).
What stock pyghmi 1.6 lacks, and this module adds (see the lab notes):

- answers to the RMCP/ASF Presence Ping and to IPMI v1.5-style Get Channel Authentication
  Capabilities requests (pyghmi only answers those carrying the IPMI v2.0 bit);
- cipher suite negotiation: pyghmi always answers "suite 3" whatever the client proposed,
  and clients that proposed SHA-256 then fail; here other proposals get status 0x11
  ("no cipher suite match"), so clients fall back to suite 3 as with a real BMC;
- an unknown user name gets RAKP 2 status 0x0D (pyghmi stays silent, which a client can
  only report as "no answer");
- sessions routed by (BMC socket, client address): pyghmi routes by client address and
  port only, which mixes up sessions when one client socket talks to several BMCs that
  share a process;
- one selectors loop over all BMC sockets (pyghmi's own listen loop loses wake-ups under
  concurrent sessions), with a handler exception logged instead of ending the loop;
- duplicate requests (a client's retransmission) answered from the last response instead
  of being executed twice — a second reset is not harmless;
- chassis commands and boot options on a ``MachineBackend``, with real one-time/persistent
  boot flags that ``ipmitool chassis bootparam get 5`` reads back.

Faults for tests (``SimFaults``): a slow BMC, lost packets, one that stops answering (after
N packets or at a command), one that forgets its sessions, one that is busy for the first N
commands, one without boot-device support.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import logging
import selectors
import socket
import struct
import time
import uuid as uuidlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyghmi.ipmi.bmc as pyghmi_bmc
import pyghmi.ipmi.private.constants as pyghmi_constants
import pyghmi.ipmi.private.serversession as pyghmi_serversession
import pyghmi.ipmi.private.session as pyghmi_session

from appliance.bmc import protocol as p
from appliance.bmc.backend import BootDevice, MachineBackend
from appliance.errors import BmcError, KpcError

log = logging.getLogger(__name__)

SESSION_IDLE_TIMEOUT = 60.0  # IPMI 2.0 §6.12.15: sessions time out after inactivity
DUPLICATE_WINDOW = 10.0  # how long a retransmitted request is answered from the cache
RECV_BUFFER = 1 << 20
MAX_PACKET = 4096

EventSink = Callable[[str, str, Mapping[str, Any]], None]  # (address, action, details)

# Boot device selector (Table 28-14, boot flags byte 2 bits 5:2) <-> backend names
_DEVICE_BY_SELECTOR: dict[int, BootDevice] = {
    p.BOOT_DEVICE_NONE: "default",
    p.BOOT_DEVICE_PXE: "network",
    p.BOOT_DEVICE_DISK: "hd",
    p.BOOT_DEVICE_DISK_SAFE: "hd",
    p.BOOT_DEVICE_CD: "cd",
    p.BOOT_DEVICE_SETUP: "setup",
}
_SELECTOR_BY_DEVICE: dict[BootDevice, int] = {
    "default": p.BOOT_DEVICE_NONE,
    "network": p.BOOT_DEVICE_PXE,
    "hd": p.BOOT_DEVICE_DISK,
    "cd": p.BOOT_DEVICE_CD,
    "setup": p.BOOT_DEVICE_SETUP,
}


_MUTE_KINDS = {
    p.CMD_GET_CHASSIS_STATUS: "status",
    p.CMD_SET_SYSTEM_BOOT_OPTIONS: "bootdev",
    p.CMD_CHASSIS_CONTROL: "control",
}


@dataclass(frozen=True)
class SimFaults:
    """Misbehaviour for tests; the default is a well-behaved BMC."""

    delay: float = 0.0  # seconds before each packet is handled (a slow BMC)
    drop_first: int = 0  # ignore the first N packets (lost on the way)
    mute_after: int | None = None  # stop answering after this many packets
    mute_on: str | None = None  # go silent at the first "status", "bootdev" or "control"
    forget_after: int | None = None  # after N packets, drop all sessions once (a BMC restart)
    busy: int = 0  # answer the first N chassis/boot commands with 0xC0 (node busy)
    no_bootdev: bool = False  # boot options commands are not supported (0xC1)


class _Session(pyghmi_serversession.ServerSession):  # type: ignore[misc]  # untyped
    """One RMCP+ session of a simulated BMC (see the module docstring for the changes)."""

    def __init__(
        self,
        authdata: Mapping[str, str],
        kg: bytes | None,
        clientaddr: Any,
        netsocket: socket.socket,
        request: bytes,
        uuid: uuidlib.UUID,
        bmc: SimBmc,
    ) -> None:
        self.clientpriv = p.PRIVILEGE_ADMINISTRATOR
        self.last_active = time.monotonic()
        self._last_request: tuple[Any, ...] | None = None
        self._last_request_at = 0.0
        self._last_response: tuple[int, bytes] | None = None
        self._recording = False
        super().__init__(authdata, kg, clientaddr, netsocket, request, uuid, bmc)
        # pyghmi registered us in its class-wide routing table; the farm routes instead
        handlers = pyghmi_session.Session.bmc_handlers.get(clientaddr)
        if handlers is not None:
            handlers.pop(bmc.port, None)
            if not handlers:
                pyghmi_session.Session.bmc_handlers.pop(clientaddr, None)

    def create_open_session_response(self, request: bytearray) -> bytearray:
        # Open Session Request (§13.17): algorithms at offsets 12, 20, 28 of the payload
        if len(request) >= 32 and (
            request[12] != p.AUTH_ALGORITHM_RAKP_HMAC_SHA1
            or request[20] != p.INTEGRITY_ALGORITHM_HMAC_SHA1_96
            or request[28] != p.CONFIDENTIALITY_ALGORITHM_AES_CBC_128
        ):
            self.clientsessionid = request[4:8]
            return bytearray((request[0], p.RMCPP_STATUS_NO_CIPHER_SUITE_MATCH, 0, 0)) + bytes(
                request[4:8]
            )
        response: bytearray = super().create_open_session_response(request)
        return response

    def _got_rakp1(self, data: bytearray) -> None:
        # RAKP Message 1 (§13.20): role at 24, user name length at 27, name from 28
        name = bytes(data[28 : 28 + data[27]]) if len(data) >= 28 else b""
        known = name and self.authdata.get(name.decode("utf-8", "replace")) is not None
        if not known:
            self.send_payload(
                bytearray((data[0], p.RMCPP_STATUS_UNAUTHORIZED_NAME, 0, 0)) + self.clientsessionid,
                pyghmi_constants.payload_types["rakp2"],
                retry=False,
            )
            return
        super()._got_rakp1(data)

    def close_server_session(self) -> None:
        self.bmc.drop_session(self)

    def handle_client_request(self, request: dict[str, Any]) -> None:
        self.last_active = now = time.monotonic()
        key = (self.seqlun, self.clientnetfn, self.clientcommand, bytes(request["data"]))
        if (
            key == self._last_request
            and self._last_response is not None
            and now - self._last_request_at < DUPLICATE_WINDOW
        ):
            code, data = self._last_response
            pyghmi_serversession.ServerSession.send_ipmi_response(self, data=data, code=code)
            return
        self._last_request, self._last_request_at = key, now
        self._last_response = None
        self._recording = True
        try:
            super().handle_client_request(request)
        finally:
            self._recording = False

    def send_ipmi_response(self, data: Any = (), code: int = 0) -> None:
        if self._recording:
            self._last_response = (code, bytes(bytearray(data)))
        super().send_ipmi_response(data=data, code=code)


class SimBmc(pyghmi_bmc.Bmc):  # type: ignore[misc]  # pyghmi is untyped
    """One simulated BMC bound to ADDRESS:PORT, controlling a ``MachineBackend``.

    It owns its UDP socket; ``SimFarm`` reads it. Nothing here starts pyghmi's IO thread.
    """

    def __init__(
        self,
        backend: MachineBackend,
        *,
        address: str,
        port: int,
        users: Mapping[str, str],
        faults: SimFaults = SimFaults(),
        iana: int = p.ASF_IANA,
        events: EventSink | None = None,
    ) -> None:
        # pyghmi's IpmiServer.__init__ would open the socket through pyghmi's client socket
        # pool and start its IO thread: set up what the inherited handlers use instead.
        self.revision = 0
        self.deviceid = 0x20
        self.firmwaremajor = 1
        self.firmwareminor = 0
        self.ipmiversion = 0x02
        self.additionaldevices = 0
        self.mfgid = 0
        self.prodid = 0
        self.uuid = uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"kpc-sim://{address}:{port}")
        self.authdata = dict(users)
        self.kg = None
        self.timeout = SESSION_IDLE_TIMEOUT
        self.port = port
        self.address = address
        self.backend = backend
        self.faults = faults
        self.iana = iana
        self._events = events
        self._packets = 0
        self._silenced = False
        self._busy_left = faults.busy
        self._persistent = False
        self._efi = False
        self.sessions: dict[Any, _Session] = {}
        family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            sock.bind((address, port))
        except OSError as exc:
            sock.close()
            raise BmcError(
                f"cannot listen on {address}:{port}/udp: {exc.strerror}",
                hint="is another simulator or BMC service using it? ports below 1024 need root",
            ) from None
        self.serversocket = sock

    # --- packets --------------------------------------------------------------------------
    @property
    def muted(self) -> bool:
        limit = self.faults.mute_after
        return self._silenced or (limit is not None and self._packets >= limit)

    def receive(self, data: bytes, client: Any) -> bool:
        """Count a packet; False for one this BMC ignores (``drop_first``, ``mute_after``)."""
        if self.muted:
            return False
        self._packets += 1
        if self._packets - 1 == self.faults.forget_after:
            self.sessions.clear()
        return self._packets > self.faults.drop_first

    def handle(self, data: bytes, client: Any) -> None:
        request = p.parse_request(data)
        if isinstance(request, p.Ping):
            self._send(p.presence_pong(request.tag, iana=self.iana), client)
            return
        if isinstance(request, p.AuthCapsRequest):
            self._send(p.auth_caps_response(request), client)
            return
        if len(data) < 16 or data[4] != p.AUTH_TYPE_RMCP_PLUS:
            return  # IPMI v1.5 sessions are not offered (the auth caps say so)
        payload_type = data[5] & 0x3F
        session_id = struct.unpack_from("<I", data, 6)[0]
        if payload_type == pyghmi_constants.payload_types["rmcpplusopenreq"]:
            self.sessions[client] = _Session(
                self.authdata, self.kg, client, self.serversocket, data[16:], self.uuid, self
            )
            return
        if payload_type == pyghmi_constants.payload_types["ipmi"] and session_id == 0:
            self.sessionless_data(data, client)  # e.g. Get Channel Cipher Suites
            return
        session = self.sessions.get(client)
        if session is not None:
            session.last_active = time.monotonic()
            session._handle_ipmi_packet(bytearray(data), sockaddr=client)

    def _send(self, packet: bytes, client: Any) -> None:
        try:
            self.serversocket.sendto(packet, client)
        except OSError as exc:
            log.debug("%s: cannot answer %s: %s", self.address, client, exc)

    def drop_session(self, session: _Session) -> None:
        if self.sessions.get(session.sockaddr) is session:
            del self.sessions[session.sockaddr]

    def expire_sessions(self, now: float) -> None:
        for client, session in list(self.sessions.items()):
            if now - session.last_active > SESSION_IDLE_TIMEOUT:
                del self.sessions[client]

    def close(self) -> None:
        self.serversocket.close()

    # --- events ---------------------------------------------------------------------------
    def _event(self, action: str, **details: Any) -> None:
        if self._events is not None:
            self._events(self.address, action, details)

    # --- inherited pyghmi hooks -----------------------------------------------------------
    def get_system_guid(self) -> uuidlib.UUID:
        return self.uuid

    def cold_reset(self) -> int:
        return 0

    # --- chassis (§28) --------------------------------------------------------------------
    def handle_raw_request(self, request: dict[str, Any], session: Any) -> None:
        netfn, command = request["netfn"], request["command"]
        if netfn != p.NETFN_CHASSIS or command not in (
            p.CMD_GET_CHASSIS_STATUS,
            p.CMD_CHASSIS_CONTROL,
            p.CMD_SET_SYSTEM_BOOT_OPTIONS,
            p.CMD_GET_SYSTEM_BOOT_OPTIONS,
        ):
            super().handle_raw_request(request, session)
            return
        data = bytes(request["data"])
        if self.faults.mute_on is not None and self.faults.mute_on == _MUTE_KINDS.get(command):
            self._silenced = True  # no answer to this command, nor to anything after it
            return
        try:
            code, reply = self._chassis(command, data)
        except KpcError as exc:
            log.info("%s: %s", self.address, exc.message)
            code, reply = p.CC_NOT_IN_PRESENT_STATE, b""
        except Exception:
            log.exception("%s: chassis command %#x failed", self.address, command)
            code, reply = p.CC_UNSPECIFIED, b""
        session.send_ipmi_response(data=reply, code=code)

    def _chassis(self, command: int, data: bytes) -> tuple[int, bytes]:
        if command == p.CMD_GET_CHASSIS_STATUS:
            on = self.backend.power_state() == "on"
            return p.CC_OK, bytes((p.CHASSIS_STATUS_POWER_ON if on else 0, 0, 0))
        boot_options = command in (p.CMD_SET_SYSTEM_BOOT_OPTIONS, p.CMD_GET_SYSTEM_BOOT_OPTIONS)
        if boot_options and self.faults.no_bootdev:
            return p.CC_INVALID_COMMAND, b""
        if command != p.CMD_GET_SYSTEM_BOOT_OPTIONS and self._busy_left > 0:
            self._busy_left -= 1
            return p.CC_NODE_BUSY, b""
        if command == p.CMD_CHASSIS_CONTROL:
            return self._control(data)
        if command == p.CMD_SET_SYSTEM_BOOT_OPTIONS:
            return self._set_boot_options(data)
        return self._get_boot_options(data)

    def _control(self, data: bytes) -> tuple[int, bytes]:
        if not data:
            return p.CC_REQUEST_LENGTH_INVALID, b""
        backend = self.backend
        directive = data[0] & 0x0F
        next_boot = backend.boot_device()
        if directive == p.CHASSIS_POWER_DOWN or directive == p.CHASSIS_SOFT_SHUTDOWN:
            backend.power_off()
            self._event("power_off")
        elif directive == p.CHASSIS_POWER_UP:
            was_on = backend.power_state() == "on"
            backend.power_on()
            self._event("power_on", next_boot=None if was_on else next_boot)
        elif directive in (p.CHASSIS_HARD_RESET, p.CHASSIS_POWER_CYCLE):
            if backend.power_state() != "on":
                return p.CC_NOT_IN_PRESENT_STATE, b""
            if directive == p.CHASSIS_HARD_RESET:
                backend.power_reset()
                self._event("reset", next_boot=next_boot)
            else:
                backend.power_cycle()
                self._event("power_cycle", next_boot=next_boot)
        else:
            return p.CC_INVALID_DATA_FIELD, b""
        return p.CC_OK, b""

    def _set_boot_options(self, data: bytes) -> tuple[int, bytes]:
        if not data:
            return p.CC_REQUEST_LENGTH_INVALID, b""
        parameter = data[0] & 0x7F
        if parameter in (p.BOOT_PARAM_SET_IN_PROGRESS, 3, p.BOOT_PARAM_INFO_ACK):
            return p.CC_OK, b""  # accepted; nothing in the simulation depends on them
        if parameter != p.BOOT_PARAM_BOOT_FLAGS:
            return p.CC_PARAMETER_NOT_SUPPORTED, b""
        if len(data) < 3:
            return p.CC_REQUEST_LENGTH_INVALID, b""
        flags, selector = data[1], (data[2] >> p.BOOT_DEVICE_SHIFT) & p.BOOT_DEVICE_MASK
        device: BootDevice | None = "default"
        if flags & p.BOOT_FLAGS_VALID:
            device = _DEVICE_BY_SELECTOR.get(selector)
        if device is None:
            return p.CC_INVALID_DATA_FIELD, b""
        persistent = bool(flags & p.BOOT_FLAGS_PERSISTENT) and device != "default"
        self.backend.set_boot_device(device, persistent)
        self._persistent, self._efi = persistent, bool(flags & p.BOOT_FLAGS_EFI)
        self._event("bootdev", device=device, persistent=persistent)
        return p.CC_OK, b""

    def _get_boot_options(self, data: bytes) -> tuple[int, bytes]:
        if not data:
            return p.CC_REQUEST_LENGTH_INVALID, b""
        parameter = data[0] & 0x7F
        head = bytes((p.BOOT_PARAM_VERSION, parameter))
        if parameter == p.BOOT_PARAM_SET_IN_PROGRESS:
            return p.CC_OK, head + b"\x00"
        if parameter == p.BOOT_PARAM_INFO_ACK:
            return p.CC_OK, head + b"\x00\x00"
        if parameter != p.BOOT_PARAM_BOOT_FLAGS:
            return p.CC_PARAMETER_NOT_SUPPORTED, b""
        device = self.backend.boot_device()
        if device == "default":
            flags, selector = 0, p.BOOT_DEVICE_NONE
        else:
            flags = p.BOOT_FLAGS_VALID
            flags |= p.BOOT_FLAGS_PERSISTENT if self._persistent else 0
            flags |= p.BOOT_FLAGS_EFI if self._efi else 0
            selector = _SELECTOR_BY_DEVICE[device]
        return p.CC_OK, head + bytes((flags, selector << p.BOOT_DEVICE_SHIFT, 0, 0, 0))


class SimFarm:
    """Serves any number of ``SimBmc`` from one thread with one selectors loop."""

    def __init__(self, bmcs: list[SimBmc]) -> None:
        self.bmcs = bmcs
        self._selector = selectors.DefaultSelector()
        for bmc in bmcs:
            self._selector.register(bmc.serversocket, selectors.EVENT_READ, bmc)
        self._delayed: list[tuple[float, int, SimBmc, bytes, Any]] = []
        self._order = itertools.count()

    def serve(self, should_stop: Callable[[], bool], *, poll: float = 0.5) -> None:
        """Answer packets until ``should_stop()`` (checked at least every ``poll`` s)."""
        next_expiry = time.monotonic() + SESSION_IDLE_TIMEOUT
        while not should_stop():
            now = time.monotonic()
            timeout = poll
            if self._delayed:
                timeout = max(0.0, min(timeout, self._delayed[0][0] - now))
            for key, _mask in self._selector.select(timeout):
                self._drain(key.data)
            now = time.monotonic()
            while self._delayed and self._delayed[0][0] <= now:
                _due, _n, bmc, data, client = heapq.heappop(self._delayed)
                self._handle(bmc, data, client)
            if now >= next_expiry:
                for bmc in self.bmcs:
                    bmc.expire_sessions(now)
                next_expiry = now + SESSION_IDLE_TIMEOUT

    def _drain(self, bmc: SimBmc) -> None:
        sock = bmc.serversocket
        while True:
            try:
                data, client = sock.recvfrom(MAX_PACKET, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. an ICMP error queued on the socket
                log.debug("%s: receive error: %s", bmc.address, exc)
                return
            if not bmc.receive(data, client):
                continue
            if bmc.faults.delay > 0:
                due = time.monotonic() + bmc.faults.delay
                heapq.heappush(self._delayed, (due, next(self._order), bmc, data, client))
            else:
                self._handle(bmc, data, client)

    @staticmethod
    def _handle(bmc: SimBmc, data: bytes, client: Any) -> None:
        try:
            bmc.handle(data, client)
        except Exception:
            log.exception("%s: error handling a packet from %s", bmc.address, client)

    def close(self) -> None:
        self._selector.close()
        for bmc in self.bmcs:
            bmc.close()
