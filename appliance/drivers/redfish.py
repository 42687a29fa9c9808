"""Redfish over HTTPS: the service-root probe of discovery.

TLS: BMCs present self-signed certificates. The probe never verifies (it sends no
credentials and only reads the public service root) but reports the SHA-256 fingerprint of
the certificate, so discovery can pin it on first use.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

REDFISH_PORT = 443
SERVICE_ROOT = "/redfish/v1/"


@dataclass(frozen=True)
class ServiceRoot:
    """What a BMC's Redfish service root says about it, without logging in."""

    address: str
    port: int
    version: str | None
    vendor: str | None
    uuid: str | None
    fingerprint: str | None  # SHA-256 of the certificate, hex


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def url(address: str, port: int, path: str) -> str:
    return f"https://{address}{'' if port == REDFISH_PORT else f':{port}'}{path}"


_PROBE_CONTEXT: ssl.SSLContext | None = None


def _probe_context() -> ssl.SSLContext:
    """No verification: the probe sends no credentials and reads a public document."""
    global _PROBE_CONTEXT
    if _PROBE_CONTEXT is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        _PROBE_CONTEXT = context
    return _PROBE_CONTEXT


async def probe_one(address: str, port: int, timeout: float) -> ServiceRoot | None:
    """One HTTP/1.1 GET of the service root on a bare TLS stream (no HTTP client library:
    discovery should not pay for importing one)."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                address, port, ssl=_probe_context(), server_hostname=address
            )
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            host = address if port == REDFISH_PORT else f"{address}:{port}"
            writer.write(
                f"GET {SERVICE_ROOT} HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
            raw = await reader.read(MAX_ROOT)
            while len(raw) < MAX_ROOT and (more := await reader.read(MAX_ROOT - len(raw))):
                raw += more
    except (OSError, TimeoutError, ssl.SSLError, EOFError):
        return None
    finally:
        if writer is not None:
            writer.close()
    body = _http_body(raw)
    if body is None:
        return None
    try:
        root: Any = json.loads(body)
    except ValueError:
        return None
    if not isinstance(root, dict) or not ("RedfishVersion" in root or "@odata.id" in root):
        return None
    return ServiceRoot(
        address,
        port,
        _text(root.get("RedfishVersion")),
        _text(root.get("Vendor")) or _text(root.get("Product")),
        _text(root.get("UUID")),
        fingerprint(der) if der else None,
    )


MAX_ROOT = 1 << 20


def _http_body(raw: bytes) -> bytes | None:
    """The body of a complete ``200`` HTTP/1.1 response (plain or chunked), else None."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or status[1] != b"200":
        return None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    if headers.get(b"transfer-encoding") == b"chunked":
        out = b""
        while True:
            size_line, sep, body = body.partition(b"\r\n")
            try:
                size = int(size_line.split(b";")[0], 16)
            except ValueError:
                return None
            if size == 0:
                return out
            out, body = out + body[:size], body[size + 2 :]
    return body


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and str(value) else None


async def probe(
    addresses: Sequence[str], *, port: int = REDFISH_PORT, timeout: float = 2.0, fanout: int = 256
) -> dict[str, ServiceRoot]:
    """``GET /redfish/v1/`` (no credentials) on every address; those that are Redfish."""
    limit = asyncio.Semaphore(fanout)
    found: dict[str, ServiceRoot] = {}

    async def one(address: str) -> None:
        async with limit:
            root = await probe_one(address, port, timeout)
        if root is not None:
            found[address] = root

    await asyncio.gather(*(one(a) for a in addresses))
    return found
