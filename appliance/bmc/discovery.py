"""Find BMCs: an asyncio sweep of UDP port 623 over address ranges.

Each address gets an RMCP/ASF Presence Ping and an IPMI Get Channel Authentication
Capabilities request (``appliance.bmc.protocol``). Either answer proves a BMC; together they
tell its IPMI versions, login methods and vendor. Sending is paced (``rate`` packets per
second, 0 = as fast as the socket takes them); an address that has not answered is asked
again ``retries`` times (the auth-caps request only), ``retry_after`` seconds after its
previous probe; the sweep ends
``timeout`` seconds after the last probe, or as soon as every address has answered both.

Pacing matters on a real LAN: every probe to an address without a neighbour entry costs an
ARP request, and Linux holds at most ``gc_thresh3`` (default 1024) neighbour entries, each
unanswered one for about 3 s. ``neighbour_budget`` says how fast a sweep may go.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from appliance.bmc import protocol as p
from appliance.errors import BmcError, UsageError

NEIGHBOUR_TABLE_MAX = Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
UNRESOLVED_NEIGHBOUR_LIFETIME = 3.0  # seconds: 3 ARP solicitations, 1 s apart (Linux defaults)
MAX_SWEEP_ADDRESSES = 1 << 20
RECV_BUFFER = 4 << 20
BATCH = 256  # probes sent between looks at the receive side when unpaced


@dataclass(frozen=True)
class SweepOptions:
    rate: int = 500  # packets per second; 0 = unpaced
    timeout: float = 1.0  # wait for answers after the last probe
    retries: int = 1  # probes again to addresses that did not answer
    retry_after: float = 0.5
    port: int = p.RMCP_PORT


@dataclass
class Found:
    """One BMC that answered, and what its answers said."""

    address: str
    pong: p.PresencePong | None = None
    auth: p.AuthCaps | None = None
    rtt: float | None = None

    @property
    def ipmi_versions(self) -> tuple[str, ...]:
        if self.auth is not None and self.auth.ipmi_versions:
            return self.auth.ipmi_versions
        return ()

    @property
    def auth_types(self) -> tuple[str, ...]:
        return self.auth.auth_types if self.auth is not None else ()

    @property
    def iana(self) -> int | None:
        return self.pong.iana if self.pong is not None else None

    @property
    def complete(self) -> bool:
        return self.pong is not None and self.auth is not None


@dataclass
class SweepResult:
    found: list[Found]
    probed: int
    packets: int
    elapsed: float
    send_errors: dict[str, int] = field(default_factory=dict)


def expand(networks: Sequence[ipaddress.IPv4Network]) -> list[str]:
    """The addresses to probe: hosts of each network, without duplicates, in order."""
    total = sum(n.num_addresses for n in networks)
    if total > MAX_SWEEP_ADDRESSES:
        raise UsageError(
            f"{total} addresses to probe: more than the {MAX_SWEEP_ADDRESSES} kpc sweeps at once",
            hint="give smaller networks (a /12 at most)",
        )
    seen: set[int] = set()
    out: list[str] = []
    for network in networks:
        first, last = int(network.network_address), int(network.broadcast_address)
        if network.prefixlen < 31:  # no network and broadcast addresses
            first, last = first + 1, last - 1
        for number in range(first, last + 1):
            if number not in seen:
                seen.add(number)
                out.append(socket.inet_ntoa(number.to_bytes(4, "big")))
    return out


def neighbour_budget(networks: Sequence[ipaddress.IPv4Network], table_max: int) -> int | None:
    """The highest rate (packets/s) that keeps unresolved ARP entries within 3/4 of the table.

    The rest is left for the host's real neighbours. None when no network needs ARP
    (loopback). Two packets per address. With Linux's default 1024 entries: 512/s.
    """
    if all(n.is_loopback for n in networks):
        return None
    addresses_per_second = (table_max * 3 / 4) / UNRESOLVED_NEIGHBOUR_LIFETIME
    return max(1, int(addresses_per_second * 2))


def neighbour_table_max() -> int:
    try:
        return int(NEIGHBOUR_TABLE_MAX.read_text().strip())
    except (OSError, ValueError):
        return 1024


class _Sweep(asyncio.DatagramProtocol):
    def __init__(
        self,
        targets: list[str],
        options: SweepOptions,
        on_found: Callable[[Found], None] | None,
    ) -> None:
        self.options = options
        self.targets = targets
        self.wanted = set(targets)
        self.found: dict[str, Found] = {}
        self.sent_at: dict[str, float] = {}
        self.on_found = on_found
        self.packets = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.all_answered = asyncio.Event()

    # --- receiving ---
    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        host, port = str(addr[0]), addr[1]
        if host not in self.wanted or port != self.options.port:
            return
        reply = p.parse_reply(data)
        if reply is None:
            return
        entry = self.found.get(host)
        new = entry is None
        if entry is None:
            entry = self.found[host] = Found(host)
            sent = self.sent_at.get(host)
            entry.rtt = time.monotonic() - sent if sent is not None else None
        if isinstance(reply, p.PresencePong):
            entry.pong = entry.pong or reply
        else:
            entry.auth = entry.auth or reply
        if new and self.on_found is not None:
            self.on_found(entry)
        if len(self.found) == len(self.wanted) and all(f.complete for f in self.found.values()):
            self.all_answered.set()

    def error_received(self, exc: Exception) -> None:  # ICMP errors: nobody there
        return

    # --- sending ---
    async def send_all(self, sock: socket.socket) -> None:
        """First probes in order, paced; second chances for the silent ones when due."""
        options = self.options
        port = options.port
        pairs = [(p.presence_ping(seq), p.get_channel_auth_caps(seq)) for seq in range(64)]
        retries: collections.deque[tuple[float, str, int]] = collections.deque()
        fresh = iter(self.targets)
        found, sent_at = self.found, self.sent_at
        start = time.monotonic()
        count = 0
        while True:
            now = time.monotonic()
            if options.rate:
                budget = int((now - start) * options.rate) + 2 - self.packets
                if budget < 2:
                    await asyncio.sleep(max(0.001, (2 - budget) / options.rate))
                    continue
            else:
                budget = 2 * BATCH
            sent_any = False
            while budget > 0:
                if retries and retries[0][0] <= now:
                    _due, host, attempt = retries.popleft()
                    if host in found:
                        continue
                    packets: tuple[bytes, ...] = pairs[count & 63][1:]  # auth caps only
                else:
                    host = next(fresh, "")
                    if not host:
                        break
                    attempt, packets = 0, pairs[count & 63]
                    sent_at[host] = now
                count += 1
                budget -= len(packets)
                for packet in packets:
                    try:
                        sock.sendto(packet, (host, port))
                        self.packets += 1
                    except OSError as exc:
                        await self._send_error(sock, exc, packet, (host, port))
                sent_any = True
                if attempt < options.retries:
                    retries.append((now + options.retry_after, host, attempt + 1))
            if not sent_any:
                if not retries:
                    return
                await asyncio.sleep(max(0.0, retries[0][0] - time.monotonic()))
            else:
                await asyncio.sleep(0)  # let the receive side run

    async def _send_error(
        self, sock: socket.socket, exc: OSError, packet: bytes, destination: tuple[str, int]
    ) -> None:
        if isinstance(exc, BlockingIOError):  # the send buffer is full: wait for room
            # (not loop.sock_sendto: the socket belongs to the datagram transport, and
            # asyncio refuses that; probes waiting for ARP on a real LAN fill the buffer)
            await asyncio.sleep(0.05)
            try:
                sock.sendto(packet, destination)
            except OSError as again:
                self.errors[again.strerror or str(again)] += 1
                return
            self.packets += 1
            return
        if exc.errno == errno.ENOBUFS:  # neighbour table or queue full: slow down
            await asyncio.sleep(0.01)
        self.errors[exc.strerror or str(exc)] += 1


async def sweep(
    networks: Sequence[ipaddress.IPv4Network],
    options: SweepOptions = SweepOptions(),
    on_found: Callable[[Found], None] | None = None,
) -> SweepResult:
    targets = expand(networks)
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        sock.bind(("0.0.0.0", 0))
    except OSError as exc:
        sock.close()
        raise BmcError(f"cannot open a UDP socket for discovery: {exc.strerror}") from None
    protocol = _Sweep(targets, options, on_found)
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
    try:
        if targets:
            await protocol.send_all(sock)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(protocol.all_answered.wait(), options.timeout)
    finally:
        transport.close()
    if targets and protocol.packets == 0 and protocol.errors:
        reason, _count = protocol.errors.most_common(1)[0]
        raise BmcError(
            f"could not send a single probe: {reason}",
            hint="check the host's routes to the BMC networks ('ip route get ADDRESS')",
        )
    found = sorted(protocol.found.values(), key=lambda f: ipaddress.ip_address(f.address))
    return SweepResult(
        found=found,
        probed=len(targets),
        packets=protocol.packets,
        elapsed=time.monotonic() - started,
        send_errors=dict(protocol.errors),
    )


def run_sweep(
    networks: Sequence[ipaddress.IPv4Network],
    options: SweepOptions = SweepOptions(),
    on_found: Callable[[Found], None] | None = None,
) -> SweepResult:
    return asyncio.run(sweep(networks, options, on_found))
