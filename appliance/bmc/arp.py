"""Which addresses of a directly attached network are alive: an ARP sweep (RFC 826).

A probe to an address the kernel has no neighbour entry for waits for ARP, and a sweep of
a LAN full of silent addresses fills the neighbour table with unresolved entries (``sendto``
then fails with EAGAIN). So on a directly attached network kpc asks ARP itself, as arp-scan
and nmap do: one broadcast ARP request per address on a raw ``AF_PACKET`` socket (root or
CAP_NET_RAW), bound to the interface the network is on; the hosts that answer are the only
ones probed further. The kernel's neighbour table is not touched.

Pure parts: the frames (``request``, ``parse_reply``) and ``attached`` (which part of a
sweep lies on which interface). ``sweep`` does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from appliance.errors import BmcError

ETH_P_ARP = 0x0806  # EtherType of ARP (IEEE 802 numbers)
ETH_P_IP = 0x0800
ARP_HTYPE_ETHERNET = 1
ARP_OP_REQUEST = 1
ARP_OP_REPLY = 2
BROADCAST = b"\xff" * 6
_ETHER = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")  # htype ptype hlen plen op sha spa tha tpa
FRAME_LEN = _ETHER.size + _ARP.size  # 42 bytes; the NIC pads to 60
SYS_NET = Path("/sys/class/net")


@dataclass(frozen=True)
class Link:
    """An interface with an IPv4 address: where ARP for its subnet goes out."""

    name: str
    interface: ipaddress.IPv4Interface


@dataclass(frozen=True)
class ArpOptions:
    rate: int = 20000  # requests per second (broadcasts of 60 bytes: ~10 Mbit/s)
    retries: int = 1  # another request to each address that did not answer
    retry_after: float = 0.15
    timeout: float = 0.3  # wait for answers after the last request


@dataclass
class ArpResult:
    alive: dict[str, str]  # address -> MAC that answered
    asked: int
    frames: int
    elapsed: float
    errors: dict[str, int] = field(default_factory=dict)


def request(sender_mac: bytes, sender_ip: str, target_ip: str) -> bytes:
    """A broadcast ARP request: who has ``target_ip``? tell ``sender_ip``."""
    ether = _ETHER.pack(BROADCAST, sender_mac, ETH_P_ARP)
    arp = _ARP.pack(
        ARP_HTYPE_ETHERNET,
        ETH_P_IP,
        6,
        4,
        ARP_OP_REQUEST,
        sender_mac,
        socket.inet_aton(sender_ip),
        b"\x00" * 6,
        socket.inet_aton(target_ip),
    )
    return ether + arp


def parse_reply(frame: bytes) -> tuple[str, str] | None:
    """(sender address, sender MAC) of an ARP reply for IPv4 over Ethernet, else None."""
    if len(frame) < FRAME_LEN:
        return None
    _dst, _src, ethertype = _ETHER.unpack_from(frame)
    if ethertype != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op, sha, spa, _tha, _tpa = _ARP.unpack_from(frame, _ETHER.size)
    if (htype, ptype, hlen, plen, op) != (ARP_HTYPE_ETHERNET, ETH_P_IP, 6, 4, ARP_OP_REPLY):
        return None
    return socket.inet_ntoa(spa), ":".join(f"{b:02x}" for b in sha)


def attached(
    addresses: Sequence[str], links: Sequence[Link]
) -> tuple[dict[Link, list[str]], list[str]]:
    """Split a sweep: the addresses inside a link's subnet (ARP works there) and the rest
    (routed). The link's own address is left out; loopback links never count."""
    local = [link for link in links if not link.interface.ip.is_loopback]
    by_link: dict[Link, list[str]] = {}
    routed: list[str] = []
    for text in addresses:
        address = ipaddress.IPv4Address(text)
        link = next((lk for lk in local if address in lk.interface.network), None)
        if link is None:
            routed.append(text)
        elif address != link.interface.ip:
            by_link.setdefault(link, []).append(text)
    return by_link, routed


def link_mac(name: str) -> bytes:
    try:
        text = (SYS_NET / name / "address").read_text().strip()
    except OSError as exc:
        raise BmcError(f"cannot read the MAC address of {name}: {exc.strerror}") from None
    return bytes.fromhex(text.replace(":", ""))


class _Receiver:
    def __init__(self, wanted: set[str], on_alive: Callable[[str, str], None] | None) -> None:
        self.wanted = wanted
        self.on_alive = on_alive
        self.alive: dict[str, str] = {}
        self.all_answered = asyncio.Event()

    def read(self, sock: socket.socket) -> None:
        while True:
            try:
                frame = sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            reply = parse_reply(frame)
            if reply is None:
                continue
            address, mac = reply
            if address in self.wanted and address not in self.alive:
                self.alive[address] = mac
                if self.on_alive is not None:
                    self.on_alive(address, mac)
                if len(self.alive) == len(self.wanted):
                    self.all_answered.set()


def open_socket(link: str) -> socket.socket:
    """A raw ARP socket bound to ``link``; BmcError (with a hint) when not permitted."""
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    except PermissionError:
        raise BmcError(
            "an ARP sweep needs a raw socket (root or CAP_NET_RAW)",
            hint="run kpc as root on the deploy host, or pass --no-arp",
        ) from None
    try:
        sock.bind((link, ETH_P_ARP))
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    except OSError as exc:
        sock.close()
        raise BmcError(f"cannot open an ARP socket on {link}: {exc.strerror}") from None
    return sock


async def _send(sock: socket.socket, frame: bytes, errors: dict[str, int]) -> bool:
    for _ in range(100):
        try:
            sock.send(frame)
            return True
        except (BlockingIOError, InterruptedError):
            await asyncio.sleep(0.001)  # the interface queue is full: wait for room
        except OSError as exc:
            key = exc.strerror or str(exc)
            errors[key] = errors.get(key, 0) + 1
            return False
    errors["send queue full"] = errors.get("send queue full", 0) + 1
    return False


async def sweep(
    link: Link,
    targets: Sequence[str],
    options: ArpOptions = ArpOptions(),
    on_alive: Callable[[str, str], None] | None = None,
) -> ArpResult:
    """Ask ARP for every target on ``link``; the ones that answered, with their MACs.

    ``on_alive(address, mac)`` is called as each answer arrives, so the caller can start
    probing a host while the sweep goes on."""
    started = time.monotonic()
    mac = link_mac(link.name)
    source = str(link.interface.ip)
    sock = open_socket(link.name)
    loop = asyncio.get_running_loop()
    receiver = _Receiver(set(targets), on_alive)
    loop.add_reader(sock.fileno(), receiver.read, sock)
    errors: dict[str, int] = {}
    frames = 0
    try:
        pending = list(targets)
        for attempt in range(options.retries + 1):
            if attempt:
                await _wait(receiver, options.retry_after)
                pending = [a for a in pending if a not in receiver.alive]
                if not pending:
                    break
            began = time.monotonic()
            for index, address in enumerate(pending):
                if options.rate:
                    due = began + index / options.rate
                    if due > time.monotonic() + 0.001:
                        await asyncio.sleep(due - time.monotonic())
                if await _send(sock, request(mac, source, address), errors):
                    frames += 1
                if index % 64 == 63:
                    await asyncio.sleep(0)  # let the receiver run
        await _wait(receiver, options.timeout)
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()
    if targets and frames == 0 and errors:
        reason = max(errors, key=lambda k: errors[k])
        raise BmcError(f"could not send a single ARP request on {link.name}: {reason}")
    return ArpResult(dict(receiver.alive), len(targets), frames, time.monotonic() - started, errors)


async def _wait(receiver: _Receiver, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(receiver.all_answered.wait(), seconds)
