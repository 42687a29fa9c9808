"""A raw DHCP client for the proxy-DHCP test, run inside a test network namespace.

It plays a PXE (or iPXE) client: broadcasts a DHCPDISCOVER with PXE options (60 PXEClient,
93 client architecture, 94 NDI, 97 machine GUID; 77 user class "iPXE" when asked), collects
every DHCPOFFER until both a lease offer and a proxy (PXE) offer arrived or the deadline
passed, optionally requests the leased address, and prints everything it received as JSON.

    python dhcp_probe.py --iface eth0 --mac 52:54:00:.. --arch 0 [--ipxe] [--request]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
from typing import Any

SERVER_PORT, CLIENT_PORT = 67, 68  # RFC 2131
PXE_PORT = 4011  # PXE 2.1 boot server discovery
MAGIC = b"\x63\x82\x53\x63"
DISCOVER, OFFER, REQUEST, ACK, NAK = 1, 2, 3, 5, 6
MESSAGE_TYPES = {1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK"}
OPT_REQUESTED_IP, OPT_MSG_TYPE, OPT_SERVER_ID, OPT_PARAMS = 50, 53, 54, 55
OPT_VENDOR_CLASS, OPT_USER_CLASS, OPT_ARCH, OPT_NDI, OPT_GUID = 60, 77, 93, 94, 97
OPT_END = 255
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


def option(code: int, value: bytes) -> bytes:
    return bytes([code, len(value)]) + value


def packet(
    kind: int,
    xid: int,
    mac: bytes,
    arch: int,
    ipxe: bool,
    extra: bytes = b"",
    ciaddr: str = "0.0.0.0",
) -> bytes:
    flags = 0x8000 if ciaddr == "0.0.0.0" else 0  # broadcast replies until we have an address
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1, 1, 6, 0, xid, 0, flags,  # BOOTREQUEST, Ethernet
        ipaddress.IPv4Address(ciaddr).packed, b"\0" * 4, b"\0" * 4, b"\0" * 4,
        mac.ljust(16, b"\0"), b"\0" * 64, b"\0" * 128,
    )  # fmt: skip
    opts = option(OPT_MSG_TYPE, bytes([kind]))
    opts += option(OPT_VENDOR_CLASS, f"PXEClient:Arch:{arch:05d}:UNDI:002001".encode())
    opts += option(OPT_ARCH, struct.pack("!H", arch))
    opts += option(OPT_NDI, bytes([1, 2, 1]))
    opts += option(OPT_GUID, b"\0" + bytes(range(16)))
    if ipxe:
        opts += option(OPT_USER_CLASS, b"iPXE")
    opts += option(OPT_PARAMS, bytes([1, 3, 6, 43, 54, 60, 66, 67, 97]))
    return header + MAGIC + opts + extra + bytes([OPT_END])


def parse(data: bytes) -> dict[str, Any]:
    fields = struct.unpack("!BBBBIHH4s4s4s4s16s64s128s", data[:236])
    reply: dict[str, Any] = {
        "xid": fields[4],
        "yiaddr": str(ipaddress.IPv4Address(fields[8])),
        "siaddr": str(ipaddress.IPv4Address(fields[9])),
        "sname": fields[12].split(b"\0")[0].decode(errors="replace"),
        "file": fields[13].split(b"\0")[0].decode(errors="replace"),
        "options": {},
    }
    if data[236:240] != MAGIC:
        return reply
    i = 240
    while i < len(data):
        code = data[i]
        if code == OPT_END:
            break
        if code == 0:
            i += 1
            continue
        length = data[i + 1]
        value = data[i + 2 : i + 2 + length]
        i += 2 + length
        if code == OPT_MSG_TYPE:
            reply["type"] = MESSAGE_TYPES.get(value[0], str(value[0]))
        elif code in (OPT_SERVER_ID, 1, 3) and length == 4:
            reply["options"][str(code)] = str(ipaddress.IPv4Address(value))
        elif code in (OPT_VENDOR_CLASS, 66, 67):
            reply["options"][str(code)] = value.decode(errors="replace")
        else:
            reply["options"][str(code)] = value.hex()
    return reply


def exchange(
    sock: socket.socket,
    data: bytes,
    xid: int,
    until: Any,
    timeout: float,
    to: tuple[str, int] = ("255.255.255.255", SERVER_PORT),
) -> list[dict[str, Any]]:
    """Send ``data`` (again every second) and collect replies until ``until(replies)``."""
    replies: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    next_send = 0.0
    while time.monotonic() < deadline and not until(replies):
        now = time.monotonic()
        if now >= next_send:
            sock.sendto(data, to)
            next_send = now + 1.0
        ready, _, _ = select.select([sock], [], [], 0.2)
        if ready:
            raw, (source, _port) = sock.recvfrom(4096)
            reply = parse(raw)
            if reply["xid"] == xid:
                reply["from"] = source
                replies.append(reply)
    return replies


def listen(sock: socket.socket, xid: int, seconds: float) -> list[dict[str, Any]]:
    """Whatever else arrives for ``xid`` within ``seconds`` (to prove nobody else answered)."""
    replies = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if ready:
            raw, (source, _port) = sock.recvfrom(4096)
            reply = parse(raw)
            if reply["xid"] == xid:
                reply["from"] = source
                replies.append(reply)
    return replies


def first_menu_item(offer: dict[str, Any]) -> int | None:
    """The boot item type of the first PXE menu entry (option 43, sub-option 9), if any."""
    data = bytes.fromhex(offer["options"].get("43", ""))
    i = 0
    while i + 1 < len(data) and data[i] != OPT_END:
        code, length = data[i], data[i + 1]
        if code == 9 and length >= 3:
            return int(struct.unpack("!H", data[i + 2 : i + 4])[0])
        i += 2 + length
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iface", required=True)
    ap.add_argument("--mac", required=True)
    ap.add_argument("--arch", type=int, default=0)
    ap.add_argument("--ipxe", action="store_true")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()
    mac = bytes.fromhex(args.mac.replace(":", ""))
    xid = int.from_bytes(os.urandom(4), "big")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, args.iface.encode())
    sock.bind(("0.0.0.0", CLIENT_PORT))

    def both(replies: list[dict[str, Any]]) -> bool:
        offers = [r for r in replies if r.get("type") == "OFFER"]
        lease = any(r["yiaddr"] != "0.0.0.0" for r in offers)
        proxy = any(r["yiaddr"] == "0.0.0.0" for r in offers)
        return lease and proxy

    def answered(replies: list[dict[str, Any]]) -> bool:
        return any(r.get("type") in ("ACK", "NAK") for r in replies)

    # 1. DISCOVER: a lease offer from the site's server, a boot offer from the proxy
    result: dict[str, Any] = {"xid": xid, "offers": [], "acks": [], "late": [], "boot": []}
    discover = packet(DISCOVER, xid, mac, args.arch, args.ipxe)
    result["offers"] = exchange(sock, discover, xid, both, args.timeout)
    leases = [r for r in result["offers"] if r["yiaddr"] != "0.0.0.0"]
    proxies = [r for r in result["offers"] if r["yiaddr"] == "0.0.0.0"]
    if not leases or not proxies:
        json.dump(result, sys.stdout)
        return 0
    # 2. REQUEST the lease from the site's server; then listen on, to prove the proxy stays quiet
    lease = leases[0]
    extra = option(OPT_REQUESTED_IP, ipaddress.IPv4Address(lease["yiaddr"]).packed)
    extra += option(OPT_SERVER_ID, ipaddress.IPv4Address(lease["options"]["54"]).packed)
    request = packet(REQUEST, xid, mac, args.arch, args.ipxe, extra)
    result["acks"] = exchange(sock, request, xid, answered, args.timeout)
    result["late"] = listen(sock, xid, 1.0)
    # 3. PXE boot server discovery (PXE 2.1): with the leased address, ask the proxy at port
    #    4011 for the first menu item (option 43 sub-option 71), or with no item when the
    #    offer carried no menu (UEFI firmware does no menus)
    address = f"{lease['yiaddr']}/{lease['options'].get('1', '255.255.255.0')}"
    subprocess.run(["ip", "addr", "add", address, "dev", args.iface], check=True)
    try:
        item = first_menu_item(proxies[0])
        extra = b""
        if item is not None:
            extra = option(43, option(71, struct.pack("!HH", item, 0)) + bytes([OPT_END]))
        boot = packet(REQUEST, xid, mac, args.arch, args.ipxe, extra, ciaddr=lease["yiaddr"])
        server = proxies[0]["options"]["54"]
        result["boot"] = exchange(sock, boot, xid, answered, args.timeout, to=(server, PXE_PORT))
        result["leased"] = lease["yiaddr"]
    finally:
        subprocess.run(["ip", "addr", "del", address, "dev", args.iface], check=False)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
