"""Simulated Redfish BMCs (HTTPS) over ``MachineBackend``s: the simulator's Redfish service.

One asyncio loop serves a farm: each BMC listens on its own address with its own
self-signed certificate (EC P-256, made at start-up with ``cryptography``), the
way a rack of real BMCs presents one certificate each. The resources are the ones kpc and
other clients use, with the shapes of DMTF's schemas:

- ``/redfish/v1/`` (no login), ``SessionService`` with ``Sessions`` (``POST`` with
  UserName/Password → ``X-Auth-Token`` + ``Location``; ``DELETE`` ends it; a session limit),
  HTTP basic auth on every other resource as an alternative;
- ``Systems/1``: ``PowerState``, ``Boot`` (one-time/continuous override of ``Pxe``, ``Hdd``,
  ``Cd``, ``UefiHttp``, with ``BootSourceOverrideMode``; consumed at the next boot), the
  ``ComputerSystem.Reset`` action with ``ResetType@Redfish.AllowableValues``,
  ``EthernetInterfaces`` (the machine's MAC), ``VirtualMedia/Cd`` (insert/eject by URL),
  an ``ETag`` checked against ``If-Match``;
- ``Managers/1``.

Faults for tests (``RedfishFaults``): a delay before every answer, a narrower set of reset
types, a reset that is accepted but never answered, a session limit, no session service.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import ipaddress
import logging
import secrets
import ssl
import tempfile
import threading
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.bmc.backend import BootDevice, MachineBackend

log = logging.getLogger(__name__)

EventSink = Callable[[str, str, Mapping[str, Any]], None]  # (address, action, details)
ALL_RESET_TYPES = ("On", "ForceOff", "GracefulShutdown", "ForceRestart", "GracefulRestart",
                   "PowerCycle")  # fmt: skip
BOOT_TARGETS = {"None": "default", "Pxe": "network", "Hdd": "hd", "Cd": "cd", "UefiHttp": "network"}
SYSTEM = "/redfish/v1/Systems/1"
SESSIONS = "/redfish/v1/SessionService/Sessions"


@dataclass(frozen=True)
class RedfishFaults:
    delay: float = 0.0  # seconds before every answer
    reset_types: tuple[str, ...] = ALL_RESET_TYPES
    hang_on_reset: bool = False  # restart types accepted, never answered (nor done)
    max_sessions: int = 16
    no_sessions: bool = False  # no SessionService: basic auth only


@dataclass
class _Bmc:
    address: str
    backend: MachineBackend
    users: Mapping[str, str]
    faults: RedfishFaults
    events: EventSink | None
    uuid: str
    mac: str
    sessions: dict[str, str] = field(default_factory=dict)  # token -> session id
    next_session: int = 1
    boot_target: str = "None"
    boot_enabled: str = "Disabled"
    boot_mode: str = "UEFI"
    media: str | None = None
    generation: int = 0  # for the ETag

    def event(self, action: str, **details: Any) -> None:
        if self.events is not None:
            self.events(self.address, action, details)


def make_certificate(address: str, directory: Path) -> tuple[Path, Path, str]:
    """A self-signed certificate for ``address``: (cert file, key file, SHA-256 hex)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bmc-{address}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / f"{address}.crt", directory / f"{address}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)
    der = cert.public_bytes(serialization.Encoding.DER)
    return cert_file, key_file, hashlib.sha256(der).hexdigest()


def _error(status: int, message: str, message_id: str = "Base.1.8.GeneralError") -> web.Response:
    body = {
        "error": {
            "code": message_id,
            "message": message,
            "@Message.ExtendedInfo": [{"MessageId": message_id, "Message": message}],
        }
    }
    return web.json_response(body, status=status)


class RedfishFarm:
    """Many simulated Redfish BMCs in one asyncio loop."""

    def __init__(self, port: int = 443, cert_dir: Path | None = None) -> None:
        self.port = port
        self.bmcs: dict[str, _Bmc] = {}
        self.fingerprints: dict[str, str] = {}
        self._certs: dict[str, tuple[Path, Path]] = {}
        self._tmp = None if cert_dir else tempfile.TemporaryDirectory(prefix="kpc-redfish-")
        self._cert_dir = cert_dir or Path(self._tmp.name if self._tmp else ".")
        self._runner: web.AppRunner | None = None

    def add(
        self,
        address: str,
        backend: MachineBackend,
        users: Mapping[str, str],
        faults: RedfishFaults = RedfishFaults(),
        events: EventSink | None = None,
        mac: str | None = None,
    ) -> None:
        packed = ipaddress.ip_address(address).packed
        self.bmcs[address] = _Bmc(
            address,
            backend,
            users,
            faults,
            events,
            uuid=str(uuidlib.uuid5(uuidlib.NAMESPACE_URL, f"kpc-sim:{address}")),
            mac=mac or "52:54:00:" + ":".join(f"{b:02x}" for b in packed[1:]),
        )
        cert, key, fingerprint = make_certificate(address, self._cert_dir)
        self._certs[address] = (cert, key)
        self.fingerprints[address] = fingerprint

    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        self._routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        for address, (cert, key) in self._certs.items():
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            site = web.TCPSite(self._runner, address, self.port, ssl_context=context)
            await site.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._tmp is not None:
            self._tmp.cleanup()

    # --- plumbing ---------------------------------------------------------------------

    def _bmc(self, request: web.Request) -> _Bmc:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        return self.bmcs[str(sockname[0])] if sockname else next(iter(self.bmcs.values()))

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        bmc = self._bmc(request)
        if bmc.faults.delay:
            await asyncio.sleep(bmc.faults.delay)
        public = request.path in ("/redfish/v1/", "/redfish/v1") or (
            request.method == "POST" and request.path == SESSIONS
        )
        if not public and not self._authorised(bmc, request):
            response = _error(401, "authentication required", "Base.1.8.NoValidSession")
            response.headers["WWW-Authenticate"] = 'Basic realm="kpc-sim"'
            return response
        request["bmc"] = bmc
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status >= 400:
                return _error(exc.status, exc.reason)
            raise

    @staticmethod
    def _authorised(bmc: _Bmc, request: web.Request) -> bool:
        token = request.headers.get("X-Auth-Token")
        if token is not None:
            return token in bmc.sessions
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        known = bmc.users.get(user)
        return known is not None and secrets.compare_digest(known, password)

    def _routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/redfish/v1/", self._root)
        r.add_get("/redfish/v1", self._root)
        r.add_get("/redfish/v1/SessionService", self._session_service)
        r.add_get(SESSIONS, self._sessions)
        r.add_post(SESSIONS, self._login)
        r.add_delete(SESSIONS + "/{id}", self._logout)
        r.add_get("/redfish/v1/Systems", self._systems)
        r.add_get(SYSTEM, self._system)
        r.add_patch(SYSTEM, self._patch_system)
        r.add_post(SYSTEM + "/Actions/ComputerSystem.Reset", self._reset)
        r.add_get(SYSTEM + "/EthernetInterfaces", self._nics)
        r.add_get(SYSTEM + "/EthernetInterfaces/1", self._nic)
        r.add_get(SYSTEM + "/VirtualMedia", self._media_collection)
        r.add_get(SYSTEM + "/VirtualMedia/Cd", self._media)
        r.add_post(SYSTEM + "/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia", self._insert)
        r.add_post(SYSTEM + "/VirtualMedia/Cd/Actions/VirtualMedia.EjectMedia", self._eject)
        r.add_get("/redfish/v1/Managers", self._managers)
        r.add_get("/redfish/v1/Managers/1", self._manager)

    # --- resources --------------------------------------------------------------------

    async def _root(self, request: web.Request) -> web.Response:
        bmc: _Bmc = request["bmc"]
        root: dict[str, Any] = {
            "@odata.id": "/redfish/v1/",
            "@odata.type": "#ServiceRoot.v1_11_0.ServiceRoot",
            "Id": "RootService",
            "Name": "kpc simulated BMC",
            "RedfishVersion": "1.11.0",
            "UUID": bmc.uuid,
            "Vendor": "kpc-sim",
            "Systems": {"@odata.id": "/redfish/v1/Systems"},
            "Managers": {"@odata.id": "/redfish/v1/Managers"},
        }
        if not bmc.faults.no_sessions:
            root["SessionService"] = {"@odata.id": "/redfish/v1/SessionService"}
            root["Links"] = {"Sessions": {"@odata.id": SESSIONS}}
        return web.json_response(root)

    async def _session_service(self, request: web.Request) -> web.Response:
        if request["bmc"].faults.no_sessions:
            raise web.HTTPNotFound()
        return web.json_response(
            {
                "@odata.id": "/redfish/v1/SessionService",
                "Id": "SessionService",
                "Name": "Session Service",
                "ServiceEnabled": True,
                "Sessions": {"@odata.id": SESSIONS},
            }
        )

    async def _sessions(self, request: web.Request) -> web.Response:
        bmc: _Bmc = request["bmc"]
        members = [{"@odata.id": f"{SESSIONS}/{sid}"} for sid in bmc.sessions.values()]
        return web.json_response(
            {"@odata.id": SESSIONS, "Name": "Sessions", "Members": members,
             "Members@odata.count": len(members)}
        )  # fmt: skip

    async def _login(self, request: web.Request) -> web.Response:
        bmc: _Bmc = request["bmc"]
        if bmc.faults.no_sessions:
            raise web.HTTPNotFound()
        try:
            body = await request.json()
            user, password = str(body["UserName"]), str(body["Password"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "UserName and Password are required", "Base.1.8.PropertyMissing")
        known = bmc.users.get(user)
        if known is None or not secrets.compare_digest(known, password):
            return _error(401, "invalid user name or password", "Base.1.8.NoValidSession")
        if len(bmc.sessions) >= bmc.faults.max_sessions:
            return _error(
                400,
                "The maximum number of user sessions is reached.",
                "Base.1.8.SessionLimitExceeded",
            )
        token, sid = secrets.token_hex(16), str(bmc.next_session)
        bmc.next_session += 1
        bmc.sessions[token] = sid
        bmc.event("session", state="open", sessions=len(bmc.sessions))
        location = f"{SESSIONS}/{sid}"
        response = web.json_response(
            {"@odata.id": location, "Id": sid, "Name": "User Session", "UserName": user}, status=201
        )
        response.headers["X-Auth-Token"] = token
        response.headers["Location"] = location
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        bmc: _Bmc = request["bmc"]
        sid = request.match_info["id"]
        for token, known in list(bmc.sessions.items()):
            if known == sid:
                del bmc.sessions[token]
                bmc.event("session", state="closed", sessions=len(bmc.sessions))
                return web.Response(status=204)
        raise web.HTTPNotFound()

    async def _systems(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "@odata.id": "/redfish/v1/Systems",
                "Name": "Computer Systems",
                "Members": [{"@odata.id": SYSTEM}],
                "Members@odata.count": 1,
            }
        )

    def _etag(self, bmc: _Bmc) -> str:
        return f'W/"{bmc.generation}"'

    async def _system(self, request: web.Request) -> web.Response:
        bmc: _Bmc = request["bmc"]
        power = await asyncio.to_thread(bmc.backend.power_state)
        document = {
            "@odata.id": SYSTEM,
            "@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem",
            "Id": "1",
            "Name": f"lab server behind {bmc.address}",
            "Manufacturer": "kpc",
            "Model": "simulated server",
            "SerialNumber": f"SIM-{bmc.uuid[:8].upper()}",
            "UUID": bmc.uuid,
            "PowerState": "On" if power == "on" else "Off",
            "Boot": {
                "BootSourceOverrideEnabled": bmc.boot_enabled,
                "BootSourceOverrideTarget": bmc.boot_target,
                "BootSourceOverrideTarget@Redfish.AllowableValues": list(BOOT_TARGETS),
                "BootSourceOverrideMode": bmc.boot_mode,
                "BootSourceOverrideMode@Redfish.AllowableValues": ["UEFI", "Legacy"],
            },
            "Actions": {
                "#ComputerSystem.Reset": {
                    "target": SYSTEM + "/Actions/ComputerSystem.Reset",
                    "ResetType@Redfish.AllowableValues": list(bmc.faults.reset_types),
                }
            },
            "EthernetInterfaces": {"@odata.id": SYSTEM + "/EthernetInterfaces"},
            "VirtualMedia": {"@odata.id": SYSTEM + "/VirtualMedia"},
            "Links": {"ManagedBy": [{"@odata.id": "/redfish/v1/Managers/1"}]},
        }
        return web.json_response(document, headers={"ETag": self._etag(bmc)})

    async def _patch_system(self, request: web.Request) -> web.Response:
        bmc: _Bmc = request["bmc"]
        match = request.headers.get("If-Match")
        if match is not None and match not in ("*", self._etag(bmc)):
            return _error(
                412, "the resource changed (ETag mismatch)", "Base.1.8.PreconditionFailed"
            )
        try:
            body = await request.json()
            boot = body["Boot"]
            assert isinstance(boot, dict)
        except (ValueError, KeyError, AssertionError, TypeError):
            return _error(400, "only Boot can be changed here", "Base.1.8.PropertyNotWritable")
        target = boot.get("BootSourceOverrideTarget", bmc.boot_target)
        enabled = boot.get("BootSourceOverrideEnabled", "Once")
        mode = boot.get("BootSourceOverrideMode", bmc.boot_mode)
        for name, value, allowed in (
            ("BootSourceOverrideTarget", target, BOOT_TARGETS),
            ("BootSourceOverrideEnabled", enabled, ("Disabled", "Once", "Continuous")),
            ("BootSourceOverrideMode", mode, ("UEFI", "Legacy")),
        ):
            if value not in allowed:
                return _error(400, f"{value!r} is not allowed for {name}",
                              "Base.1.8.PropertyValueNotInList")  # fmt: skip
        device: BootDevice = BOOT_TARGETS[target]  # type: ignore[assignment]
        if enabled == "Disabled":
            device = "default"
        persistent = enabled == "Continuous"
        await asyncio.to_thread(bmc.backend.set_boot_device, device, persistent)
        bmc.boot_target, bmc.boot_enabled, bmc.boot_mode = target, enabled, mode
        bmc.generation += 1
        bmc.event("bootdev", device=device, persistent=persistent, target=target, mode=mode)
        return web.Response(status=204)

    def _consume_override(self, bmc: _Bmc) -> None:
        if bmc.boot_enabled == "Once":
            bmc.boot_enabled, bmc.boot_target = "Disabled", "None"
            bmc.generation += 1

    async def _reset(self, request: web.Request) -> web.Response:
        bmc: _Bmc = request["bmc"]
        try:
            kind = str((await request.json())["ResetType"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "ResetType is required", "Base.1.8.ActionParameterMissing")
        if kind not in bmc.faults.reset_types:
            return _error(400, f"ResetType {kind!r} is not supported",
                          "Base.1.8.ActionParameterValueNotInList")  # fmt: skip
        backend = bmc.backend
        restart = kind in ("ForceRestart", "GracefulRestart", "PowerCycle")
        if restart and bmc.faults.hang_on_reset:
            bmc.event("reset_ignored", reset_type=kind)
            await asyncio.Event().wait()  # accepted, never answered, never done
        next_boot = await asyncio.to_thread(backend.boot_device)
        power = await asyncio.to_thread(backend.power_state)
        if kind == "On":
            if power == "on":
                return web.Response(status=204)
            await asyncio.to_thread(backend.power_on)
            bmc.event("power_on", next_boot=next_boot)
        elif kind in ("ForceOff", "GracefulShutdown"):
            await asyncio.to_thread(backend.power_off)
            bmc.event("power_off")
            return web.Response(status=204)
        elif power != "on":
            return _error(409, "the system is powered off", "Base.1.8.ActionNotSupported")
        elif kind == "PowerCycle":
            await asyncio.to_thread(backend.power_cycle)
            bmc.event("power_cycle", next_boot=next_boot)
        else:
            await asyncio.to_thread(backend.power_reset)
            bmc.event("reset", next_boot=next_boot, reset_type=kind)
        self._consume_override(bmc)
        return web.Response(status=204)

    async def _nics(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "@odata.id": SYSTEM + "/EthernetInterfaces",
                "Name": "Ethernet Interfaces",
                "Members": [{"@odata.id": SYSTEM + "/EthernetInterfaces/1"}],
                "Members@odata.count": 1,
            }
        )

    async def _nic(self, request: web.Request) -> web.Response:
        bmc: _Bmc = request["bmc"]
        return web.json_response(
            {
                "@odata.id": SYSTEM + "/EthernetInterfaces/1",
                "Id": "1",
                "Name": "NIC 1",
                "MACAddress": bmc.mac,
                "PermanentMACAddress": bmc.mac,
            }
        )

    async def _media_collection(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "@odata.id": SYSTEM + "/VirtualMedia",
                "Name": "Virtual Media",
                "Members": [{"@odata.id": SYSTEM + "/VirtualMedia/Cd"}],
                "Members@odata.count": 1,
            }
        )

    async def _media(self, request: web.Request) -> web.Response:
        bmc: _Bmc = request["bmc"]
        base = SYSTEM + "/VirtualMedia/Cd"
        return web.json_response(
            {
                "@odata.id": base,
                "Id": "Cd",
                "Name": "Virtual CD",
                "MediaTypes": ["CD", "DVD"],
                "Image": bmc.media,
                "Inserted": bmc.media is not None,
                "WriteProtected": True,
                "Actions": {
                    "#VirtualMedia.InsertMedia": {
                        "target": base + "/Actions/VirtualMedia.InsertMedia"
                    },
                    "#VirtualMedia.EjectMedia": {
                        "target": base + "/Actions/VirtualMedia.EjectMedia"
                    },
                },
            }
        )

    async def _insert(self, request: web.Request) -> web.Response:
        bmc: _Bmc = request["bmc"]
        try:
            image = str((await request.json())["Image"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "Image is required", "Base.1.8.ActionParameterMissing")
        if not image.startswith(("http://", "https://")):
            return _error(
                400, f"cannot fetch {image!r}", "Base.1.8.ActionParameterValueFormatError"
            )
        if bmc.media is not None:
            return _error(409, "media already inserted: eject first", "Base.1.8.ResourceInUse")
        insert = getattr(bmc.backend, "insert_media", None)
        if callable(insert):
            try:
                await asyncio.to_thread(insert, image)
            except Exception as exc:  # the backend could not fetch or attach it
                return _error(500, f"cannot insert {image}: {exc}")
        bmc.media = image
        bmc.event("media_insert", image=image)
        return web.Response(status=204)

    async def _eject(self, request: web.Request) -> web.Response:
        bmc: _Bmc = request["bmc"]
        eject = getattr(bmc.backend, "eject_media", None)
        if callable(eject):
            await asyncio.to_thread(eject)
        bmc.media = None
        bmc.event("media_eject")
        return web.Response(status=204)

    async def _managers(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "@odata.id": "/redfish/v1/Managers",
                "Name": "Managers",
                "Members": [{"@odata.id": "/redfish/v1/Managers/1"}],
                "Members@odata.count": 1,
            }
        )

    async def _manager(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "@odata.id": "/redfish/v1/Managers/1",
                "Id": "1",
                "Name": "Simulated BMC",
                "ManagerType": "BMC",
                "Links": {"ManagerForServers": [{"@odata.id": SYSTEM}]},
            }
        )


def serve_forever(
    farm: RedfishFarm, stop: Callable[[], bool], started: threading.Event | None = None
) -> None:
    """Run the farm on its own event loop until ``stop()`` is true (``started`` is set once
    every BMC listens)."""

    async def main() -> None:
        await farm.start()
        if started is not None:
            started.set()
        log.debug("redfish: %d BMC(s) listening on port %d", len(farm.bmcs), farm.port)
        try:
            while not stop():
                await asyncio.sleep(0.1)
        finally:
            await farm.stop()

    asyncio.run(main())
